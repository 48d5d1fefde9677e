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

/// Where an operation's time went: phases timed back to back and logged, when the operation
/// ends, as one debug event of the target `ferrio::phases` (`op`, `total_us`, and `phases`:
/// `name=µs` pairs in order). Off unless that target is enabled (`--log-level
/// info,ferrio::phases=debug`, as `hack/bench-runtime.sh` runs the daemon): then marking costs
/// nothing but a branch.
pub struct Phases {
    op: &'static str,
    on: bool,
    started: std::time::Instant,
    last: std::time::Instant,
    done: Vec<(&'static str, u64)>,
    /// What `inner` reported since the last mark, taken off the next marked phase.
    carved: u64,
}

impl Phases {
    pub fn start(op: &'static str) -> Phases {
        let now = std::time::Instant::now();
        Phases {
            op,
            on: tracing::enabled!(target: "ferrio::phases", tracing::Level::DEBUG),
            started: now,
            last: now,
            done: Vec::new(),
            carved: 0,
        }
    }

    /// Ends the phase `name`: the time since the previous mark (or the start) is its.
    pub fn mark(&mut self, name: &'static str) {
        if !self.on {
            return;
        }
        let now = std::time::Instant::now();
        let us = u64::try_from(now.duration_since(self.last).as_micros()).unwrap_or(u64::MAX);
        self.done
            .push((name, us.saturating_sub(std::mem::take(&mut self.carved))));
        self.last = now;
    }

    /// Adds a phase measured elsewhere (a helper's own report), carved out of the current
    /// one: marked next, the current phase gets what is left.
    pub fn inner(&mut self, name: &'static str, us: u64) {
        if self.on {
            self.done.push((name, us));
            self.carved = self.carved.saturating_add(us);
        }
    }

    /// Logs the phases with the outcome: ok, or the error's kind.
    pub fn finish<T, E: crate::error::ErrorKind>(self, result: &Result<T, E>) {
        if !self.on {
            return;
        }
        let outcome = match result {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("{:?}", e.kind()),
        };
        let mut text = String::new();
        for (name, us) in &self.done {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&format!("{name}={us}"));
        }
        let total = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        tracing::debug!(target: "ferrio::phases", op = self.op, %outcome, total_us = total, phases = %text, "phases");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_off_unless_their_target_is_enabled() {
        // No subscriber in unit tests: nothing is enabled, nothing is recorded.
        let mut p = Phases::start("Op");
        p.mark("a");
        p.inner("b", 5);
        assert!(p.done.is_empty());
        p.finish(&Ok::<(), crate::engine::EngineError>(()));
    }

    #[test]
    fn phases_are_timed_back_to_back() {
        let sub = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("ferrio::phases=debug"))
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(sub, || {
            let mut p = Phases::start("Op");
            std::thread::sleep(std::time::Duration::from_millis(2));
            p.mark("first");
            std::thread::sleep(std::time::Duration::from_millis(3));
            // A helper reports 1 ms of the 3: the phase marked next keeps the rest.
            p.inner("helper", 1000);
            p.mark("second");
            let names: Vec<_> = p.done.iter().map(|(n, _)| *n).collect();
            assert_eq!(names, ["first", "helper", "second"]);
            assert!(p.done[0].1 >= 2000, "{:?}", p.done);
            assert_eq!(p.done[1].1, 1000);
            assert!((2000..3000 + 50_000).contains(&p.done[2].1), "{:?}", p.done);
            p.finish(&Ok::<(), crate::engine::EngineError>(()));
        });
    }
}
