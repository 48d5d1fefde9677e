//! CPU rate from cumulative usage: the CRI's `usage_nano_cores` needs two samples.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use super::CgroupStats;

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: SystemTime,
    usage_ns: u64,
    /// The rate computed when this sample was taken, answered again for a sample that is not
    /// newer (two callers reading in the same instant).
    rate: Option<u64>,
}

/// Keeps the previous CPU sample per id (container or pod) and turns the next one into a rate.
/// Shared by every caller (internally locked); ids that are gone should be [`forget`]ten.
///
/// [`forget`]: CpuSampler::forget
#[derive(Debug, Default)]
pub struct CpuSampler {
    prev: Mutex<HashMap<String, Sample>>,
}

impl CpuSampler {
    pub fn new() -> CpuSampler {
        CpuSampler::default()
    }

    /// Records `usage_ns` (cumulative CPU time) taken at `at` for `id` and returns the average
    /// rate since the previous sample in nanocores (1e9 = one full CPU), or `None` for the
    /// first sample of an id. A sample not newer than the previous one answers the previous
    /// rate and is not kept; a usage that went backwards (the cgroup was re-created) restarts.
    pub fn usage_nano_cores(&self, id: &str, at: SystemTime, usage_ns: u64) -> Option<u64> {
        let mut prev = self.prev.lock().unwrap_or_else(|e| e.into_inner());
        let rate = match prev.get(id) {
            None => None,
            Some(p) => match at.duration_since(p.at) {
                Ok(dt) if !dt.is_zero() => match usage_ns.checked_sub(p.usage_ns) {
                    Some(used) => {
                        let r = u128::from(used) * 1_000_000_000 / dt.as_nanos();
                        Some(u64::try_from(r).unwrap_or(u64::MAX))
                    }
                    None => None,
                },
                // Not newer: keep the previous sample and its answer.
                _ => return p.rate,
            },
        };
        prev.insert(id.to_string(), Sample { at, usage_ns, rate });
        rate
    }

    /// [`usage_nano_cores`](Self::usage_nano_cores) from a cgroup read; `None` without cpu stats.
    pub fn sample(&self, id: &str, stats: &CgroupStats) -> Option<u64> {
        let cpu = stats.cpu.as_ref()?;
        self.usage_nano_cores(id, stats.timestamp, cpu.usage_ns)
    }

    /// Drops the sample of an id that is gone.
    pub fn forget(&self, id: &str) {
        self.prev
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Keeps only the ids for which `keep` is true (a sweep after listing what exists).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.prev
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| keep(id));
    }

    /// How many ids have a sample.
    pub fn len(&self) -> usize {
        self.prev.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(ms)
    }

    #[test]
    fn first_sample_has_no_rate_then_two_samples_give_one() {
        let s = CpuSampler::new();
        assert_eq!(s.usage_nano_cores("a", at(0), 5_000_000_000), None);
        // 500 ms of CPU in 1 s = half a core.
        assert_eq!(
            s.usage_nano_cores("a", at(1000), 5_500_000_000),
            Some(500_000_000)
        );
        // 3 s of CPU in 2 s = 1.5 cores.
        assert_eq!(
            s.usage_nano_cores("a", at(3000), 8_500_000_000),
            Some(1_500_000_000)
        );
        // Ids are independent.
        assert_eq!(s.usage_nano_cores("b", at(3000), 1), None);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn stale_sample_repeats_the_last_rate_and_reset_restarts() {
        let s = CpuSampler::new();
        s.usage_nano_cores("a", at(0), 0);
        assert_eq!(
            s.usage_nano_cores("a", at(100), 10_000_000),
            Some(100_000_000)
        );
        // Same instant or older: the previous answer, and the kept sample is unchanged.
        assert_eq!(
            s.usage_nano_cores("a", at(100), 99_000_000),
            Some(100_000_000)
        );
        assert_eq!(s.usage_nano_cores("a", at(50), 1), Some(100_000_000));
        assert_eq!(
            s.usage_nano_cores("a", at(200), 20_000_000),
            Some(100_000_000)
        );
        // Usage went backwards: no rate, but the next sample counts from it.
        assert_eq!(s.usage_nano_cores("a", at(300), 1_000), None);
        assert_eq!(
            s.usage_nano_cores("a", at(400), 1_000 + 50_000_000),
            Some(500_000_000)
        );
    }

    #[test]
    fn forget_and_retain() {
        let s = CpuSampler::new();
        for id in ["a", "b", "c"] {
            s.usage_nano_cores(id, at(0), 0);
        }
        s.forget("a");
        s.retain(|id| id != "b");
        assert_eq!(s.len(), 1);
        assert_eq!(s.usage_nano_cores("a", at(10), 10), None);
        assert_eq!(
            s.usage_nano_cores("c", at(1000), 1_000_000_000),
            Some(1_000_000_000)
        );
    }
}
