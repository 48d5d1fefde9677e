//! A small NRI plugin: it adds environment variables to every container as it is created.
//! Its config (`NN-env.conf` in ferrio's `[nri] plugin_config_path`, or `env.conf`) holds
//! `KEY=VALUE` lines. Started by ferrio from `[nri] plugin_path` (named `NN-name`, on the socket
//! pair at fd 3 that `NRI_PLUGIN_SOCKET` names), or run by hand against the NRI socket:
//!
//! ```text
//! nri-env-plugin [SOCKET] [NN-NAME]     (default /var/run/nri/nri.sock, 50-env)
//! ```
//!
//! It exits when the runtime closes the connection. The test suite runs it as a pre-installed
//! plugin (tests/nri.rs).

use ferrio::nri::api;
use ferrio::nri::{mux, ttrpc, PLUGIN_SERVICE, RUNTIME_SERVICE};
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let stream = match std::env::var("NRI_PLUGIN_SOCKET") {
        Ok(fd) => {
            let s = ferrio::sys::process::take_inherited_socket(fd.parse()?)?;
            s.set_nonblocking(true)?;
            tokio::net::UnixStream::from_std(s)?
        }
        Err(_) => {
            let path = args.get(1).map_or("/var/run/nri/nri.sock", String::as_str);
            tokio::net::UnixStream::connect(path).await?
        }
    };
    let (idx, name) = match (
        std::env::var("NRI_PLUGIN_IDX"),
        std::env::var("NRI_PLUGIN_NAME"),
    ) {
        (Ok(i), Ok(n)) => (i, n),
        _ => {
            let full = args.get(2).map_or("50-env", String::as_str);
            let (i, n) = full.split_once('-').ok_or("name the plugin NN-name")?;
            (i.to_string(), n.to_string())
        }
    };
    let (trunk, c1, c2) = mux::split(stream);
    let env: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let env2 = env.clone();
    let served = tokio::spawn(ttrpc::serve(
        trunk.clone(),
        mux::PLUGIN_SERVICE_CONN,
        c1,
        move |service, method, payload| {
            let env = env2.clone();
            Box::pin(async move {
                if service != PLUGIN_SERVICE {
                    return Err(ttrpc::status(ttrpc::code::UNIMPLEMENTED, service));
                }
                let bad = |e: prost::DecodeError| {
                    ttrpc::status(ttrpc::code::INVALID_ARGUMENT, e.to_string())
                };
                Ok(match method.as_str() {
                    "Configure" => {
                        let r = api::ConfigureRequest::decode(payload.as_slice()).map_err(bad)?;
                        *env.lock().unwrap_or_else(|e| e.into_inner()) = r
                            .config
                            .lines()
                            .filter_map(|l| l.trim().split_once('='))
                            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                            .collect();
                        api::ConfigureResponse {
                            events: 1 << (api::Event::CreateContainer as i32 - 1),
                        }
                        .encode_to_vec()
                    }
                    "Synchronize" => api::SynchronizeResponse::default().encode_to_vec(),
                    "CreateContainer" => api::CreateContainerResponse {
                        adjust: Some(api::ContainerAdjustment {
                            env: env
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .iter()
                                .map(|(k, v)| api::KeyValue {
                                    key: k.clone(),
                                    value: v.clone(),
                                })
                                .collect(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }
                    .encode_to_vec(),
                    // Events it did not subscribe to, and Shutdown.
                    _ => Vec::new(),
                })
            })
        },
    ));
    let client = ttrpc::Client::new(trunk, mux::RUNTIME_SERVICE_CONN, c2);
    let _: api::Empty = client
        .call(
            RUNTIME_SERVICE,
            "RegisterPlugin",
            &api::RegisterPluginRequest {
                plugin_name: name,
                plugin_idx: idx,
                nri_version: ferrio::nri::NRI_VERSION.into(),
            },
            Duration::from_secs(5),
        )
        .await?;
    // Until the runtime closes the connection.
    let _ = served.await;
    Ok(())
}
