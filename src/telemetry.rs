//! Logging: `tracing` to stderr, filtered by the configured level or filter, which SIGHUP can
//! change ([`set_filter`]).

use std::sync::OnceLock;

type SetFilter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;
static SET_FILTER: OnceLock<SetFilter> = OnceLock::new();

pub fn init(filter: &str) {
    let f = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(f)
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colours only on a terminal: a log file or journald gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter_reloading();
    let handle = builder.reload_handle();
    if builder.try_init().is_ok() {
        let _ = SET_FILTER.set(Box::new(move |s: &str| {
            let f = tracing_subscriber::EnvFilter::try_new(s).map_err(|e| e.to_string())?;
            handle.reload(f).map_err(|e| e.to_string())
        }));
    }
}

/// Replaces the log filter (a level or a tracing filter); a filter that does not parse is an
/// error and the old one stays.
pub fn set_filter(filter: &str) -> Result<(), String> {
    match SET_FILTER.get() {
        Some(set) => set(filter),
        None => Err("logging was not initialised by ferrio".into()),
    }
}
