//! Reading and parsing the kernel's cgroup files: single values, `max`-or-number limits,
//! flat keyed files (`key value` per line) and pressure files. Every error names the file.

use std::io;
use std::path::Path;

use super::{Psi, PsiData, StatsError};

/// v1 writes "no limit" as the largest page-aligned 63-bit number; anything above 2^62 is
/// treated as unlimited.
const V1_UNLIMITED: u64 = 1 << 62;

fn parse_err(path: &Path, reason: impl Into<String>) -> StatsError {
    StatsError::Parse {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The content of `path`, or `None` when the file (or its cgroup) does not exist.
pub(super) fn read_opt(path: &Path) -> Result<Option<String>, StatsError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        // ENODEV: the cgroup was removed while the file was being read.
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV) => {
            Ok(None)
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(parse_err(path, "not UTF-8")),
        Err(source) => Err(StatsError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn number(path: &Path, text: &str) -> Result<u64, StatsError> {
    text.parse()
        .map_err(|_| parse_err(path, format!("expected a number, found {text:?}")))
}

/// A file holding one unsigned number; `None` when absent.
pub(super) fn read_u64(path: &Path) -> Result<Option<u64>, StatsError> {
    read_opt(path)?.map(|s| number(path, s.trim())).transpose()
}

/// A limit file: a number, or `max` (v2) / a value above 2^62 (v1) for none.
/// `Ok(None)` when absent or unlimited.
pub(super) fn read_limit(path: &Path) -> Result<Option<u64>, StatsError> {
    let Some(s) = read_opt(path)? else {
        return Ok(None);
    };
    let s = s.trim();
    if s == "max" {
        return Ok(None);
    }
    let v = number(path, s)?;
    Ok((v < V1_UNLIMITED).then_some(v))
}

/// A flat keyed file (`memory.stat`, `cpu.stat`): lines of `key value`.
pub(super) struct Keyed<'a> {
    path: &'a Path,
    text: String,
}

impl<'a> Keyed<'a> {
    pub(super) fn read(path: &'a Path) -> Result<Option<Keyed<'a>>, StatsError> {
        Ok(read_opt(path)?.map(|text| Keyed { path, text }))
    }

    #[cfg(test)]
    pub(super) fn from_text(path: &'a Path, text: &str) -> Keyed<'a> {
        Keyed {
            path,
            text: text.to_string(),
        }
    }

    /// The value of `key`; `None` when the file has no such line. A value that is not a number
    /// is an error naming the file, the key and what was found.
    pub(super) fn get(&self, key: &str) -> Result<Option<u64>, StatsError> {
        for line in self.text.lines() {
            let mut it = line.split_whitespace();
            if it.next() != Some(key) {
                continue;
            }
            let v = it.next().unwrap_or("");
            return v.parse().map(Some).map_err(|_| {
                parse_err(
                    self.path,
                    format!("{key}: expected a number, found {line:?}"),
                )
            });
        }
        Ok(None)
    }
}

/// A pressure file, `None` when absent.
pub(super) fn read_psi(path: &Path) -> Result<Option<Psi>, StatsError> {
    read_opt(path)?
        .map(|s| parse_psi(&s).map_err(|reason| parse_err(path, reason)))
        .transpose()
}

/// Parses a PSI file (`<resource>.pressure`, `/proc/pressure/*`):
/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` and an optional `full …` line.
pub fn parse_psi(text: &str) -> Result<Psi, String> {
    let mut some = None;
    let mut full = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let which = fields.next().unwrap_or("");
        let (mut avg10, mut avg60, mut avg300, mut total) = (None, None, None, None);
        for f in fields {
            let (k, v) = f
                .split_once('=')
                .ok_or_else(|| format!("expected key=value, found {f:?} in {line:?}"))?;
            let bad = || format!("bad value for {k} in {line:?}");
            match k {
                "avg10" => avg10 = Some(v.parse::<f64>().map_err(|_| bad())?),
                "avg60" => avg60 = Some(v.parse::<f64>().map_err(|_| bad())?),
                "avg300" => avg300 = Some(v.parse::<f64>().map_err(|_| bad())?),
                "total" => total = Some(v.parse::<u64>().map_err(|_| bad())?),
                _ => {} // a future field
            }
        }
        let data = match (avg10, avg60, avg300, total) {
            (Some(avg10), Some(avg60), Some(avg300), Some(total_us)) => PsiData {
                avg10,
                avg60,
                avg300,
                total_us,
            },
            _ => return Err(format!("missing avg10/avg60/avg300/total in {line:?}")),
        };
        match which {
            "some" => some = Some(data),
            "full" => full = Some(data),
            _ => return Err(format!("expected \"some\" or \"full\", found {line:?}")),
        }
    }
    let some = some.ok_or_else(|| "no \"some\" line".to_string())?;
    Ok(Psi { some, full })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_some_and_full() {
        let p = parse_psi(
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\n\
             full avg10=0.10 avg60=0.00 avg300=0.00 total=789\n",
        )
        .unwrap();
        assert_eq!(p.some.avg10, 1.5);
        assert_eq!(p.some.avg60, 0.25);
        assert_eq!(p.some.avg300, 0.0);
        assert_eq!(p.some.total_us, 123456);
        let full = p.full.unwrap();
        assert_eq!(full.avg10, 0.1);
        assert_eq!(full.total_us, 789);
    }

    #[test]
    fn psi_without_full_line() {
        // cpu.pressure before Linux 5.13 has only "some".
        let p = parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n").unwrap();
        assert_eq!(p.some.total_us, 5);
        assert!(p.full.is_none());
    }

    #[test]
    fn psi_garbage() {
        assert!(parse_psi("").unwrap_err().contains("no \"some\""));
        assert!(parse_psi("some avg10=x avg60=0 avg300=0 total=1")
            .unwrap_err()
            .contains("avg10"));
        assert!(parse_psi("some avg10=0 avg60=0 avg300=0")
            .unwrap_err()
            .contains("missing"));
        assert!(parse_psi("half avg10=0 avg60=0 avg300=0 total=1")
            .unwrap_err()
            .contains("\"some\" or \"full\""));
        assert!(parse_psi("some 12").unwrap_err().contains("key=value"));
    }

    #[test]
    fn keyed_lookup_and_bad_value() {
        let p = Path::new("/x/memory.stat");
        let k = Keyed::from_text(p, "cache 10\nrss 20\ntotal_rss 30\ntotal_rss_huge 0\n");
        assert_eq!(k.get("rss").unwrap(), Some(20));
        assert_eq!(k.get("total_rss").unwrap(), Some(30));
        assert_eq!(k.get("swap").unwrap(), None);
        let k = Keyed::from_text(p, "rss twelve\n");
        let e = k.get("rss").unwrap_err().to_string();
        assert!(e.contains("/x/memory.stat") && e.contains("twelve"), "{e}");
    }
}
