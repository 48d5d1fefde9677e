//! Layer unpacking: a (gzip, zstd or plain) tar stream is verified and written to a directory in
//! one pass, with OCI whiteouts turned into what overlayfs expects: `.wh.NAME` becomes a 0/0
//! character device NAME, `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.
//! Both the compressed digest and the diff ID (digest of the uncompressed tar) are computed on
//! the fly; the caller commits the directory only if both match.

use super::ImageError;
use sha2::{Digest, Sha256};
use std::cell::Cell;
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

pub const WHITEOUT_PREFIX: &str = ".wh.";
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// A reader that hashes and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    /// `sha256:<hex>` of everything read so far, and its length.
    pub fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// `sha256:<hex>` of a byte slice.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Detected from the first bytes, not from the media type: registries and archives are
    /// known to mislabel layers.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// What the layer must turn out to be; `None` fields are only computed.
#[derive(Debug, Default, Clone)]
pub struct LayerExpect {
    pub what: String,
    pub digest: Option<String>,
    pub size: Option<u64>,
    pub diff_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Unpacked {
    pub digest: String,
    pub size: u64,
    pub diff_id: String,
    pub unpacked_size: u64,
    pub compression: Compression,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> ImageError {
    ImageError::Corrupt(format!("{what}: {e}"))
}

/// Returns a reader that decompresses `reader` as its first bytes say.
pub fn decompressor<'a, R: Read + 'a>(
    mut reader: R,
) -> io::Result<(Box<dyn Read + 'a>, Compression)> {
    let mut head = Vec::with_capacity(4);
    (&mut reader).take(4).read_to_end(&mut head)?;
    let c = Compression::sniff(&head);
    let chained = io::Cursor::new(head).chain(reader);
    let r: Box<dyn Read + 'a> = match c {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(chained)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(chained)?),
        Compression::None => Box::new(chained),
    };
    Ok((r, c))
}

/// The daemon always gives unpacked files the owners the layer names. Unit tests run as any
/// user (`cargo test` without root); only root may chown, so they keep owners when they can.
#[cfg(not(test))]
fn preserve_owners() -> bool {
    true
}

#[cfg(test)]
fn preserve_owners() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Unpacks the layer read from `reader` into `dest` (an existing, empty directory) and checks it
/// against `expect`. On error `dest` may hold a partial tree: the caller removes it.
pub fn unpack_layer<R: Read>(
    reader: R,
    expect: &LayerExpect,
    dest: &Path,
) -> Result<Unpacked, ImageError> {
    let what = expect.what.as_str();
    // The layer's root, and directories the archive implies without listing them, are 0755
    // (what containerd gives them), whatever the daemon's private umask; an entry for "./"
    // sets the root's mode.
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dest, fs::Permissions::from_mode(0o755))
            .map_err(|e| corrupt(what, e))?;
    }
    let mut compressed = HashingReader::new(reader);
    let (diff_id, unpacked_size, compression) = {
        let (decomp, compression) = decompressor(&mut compressed).map_err(|e| corrupt(what, e))?;
        let mut plain = HashingReader::new(decomp);
        {
            let budget = HeaderBudget::default();
            let mut ar = tar::Archive::new(Bounded::new(&mut plain, &budget));
            ar.set_preserve_permissions(true);
            ar.set_preserve_ownerships(preserve_owners());
            ar.set_preserve_mtime(true);
            ar.set_unpack_xattrs(true);
            ar.set_overwrite(true);
            for_each_entry(&mut ar, &budget, what, |entry| {
                let path = entry.path().map_err(|e| corrupt(what, e))?.into_owned();
                apply_entry(entry, &path, dest).map_err(|e| match e {
                    EntryError::Bad(msg) => corrupt(what, format!("{}: {msg}", path.display())),
                    EntryError::Io(err) => {
                        corrupt(what, format!("{}: {}", path.display(), error_chain(&err)))
                    }
                })
            })?;
        }
        // The tar format ends before the stream does (padding): hash every byte.
        io::copy(&mut plain, &mut io::sink()).map_err(|e| corrupt(what, e))?;
        let (diff_id, n) = plain.finish();
        (diff_id, n, compression)
    };
    io::copy(&mut compressed, &mut io::sink()).map_err(|e| corrupt(what, e))?;
    let (digest, size) = compressed.finish();
    if let Some(exp) = &expect.size {
        if *exp != size {
            return Err(ImageError::SizeMismatch {
                what: what.into(),
                expected: *exp,
                actual: size,
            });
        }
    }
    if let Some(exp) = &expect.digest {
        if *exp != digest {
            return Err(ImageError::DigestMismatch {
                what: what.into(),
                expected: exp.clone(),
                actual: digest,
            });
        }
    }
    if let Some(exp) = &expect.diff_id {
        if *exp != diff_id {
            return Err(ImageError::DigestMismatch {
                what: format!("{what} (uncompressed, diff ID)"),
                expected: exp.clone(),
                actual: diff_id,
            });
        }
    }
    Ok(Unpacked {
        digest,
        size,
        diff_id,
        unpacked_size,
        compression,
    })
}

/// Most bytes of tar headers one entry may come with: its own header, GNU long name and long
/// link, PAX records, GNU sparse maps. The tar crate reads long names and PAX records whole into
/// memory, so without this bound a crafted layer declaring a 1 GiB long name would make the daemon
/// allocate 1 GiB. Real layers need a few KiB (names are at most 4 KiB, xattrs 64 KiB).
pub const MAX_ENTRY_HEADERS: u64 = 256 << 10;

/// How many bytes the tar reader may still take while it reads one entry's headers; `None`
/// while it reads file data (streamed, so unbounded).
#[derive(Default)]
pub struct HeaderBudget {
    left: Cell<Option<u64>>,
    exceeded: Cell<bool>,
}

/// The reader a tar archive reads through: while the budget is armed, reading past it fails.
pub struct Bounded<'b, R> {
    inner: R,
    budget: &'b HeaderBudget,
}

impl<'b, R: Read> Bounded<'b, R> {
    pub fn new(inner: R, budget: &'b HeaderBudget) -> Self {
        Bounded { inner, budget }
    }
}

impl<R: Read> Read for Bounded<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(left) = self.budget.left.get() else {
            return self.inner.read(buf);
        };
        if buf.is_empty() {
            return Ok(0);
        }
        if left == 0 {
            self.budget.exceeded.set(true);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("tar headers of one entry exceed {MAX_ENTRY_HEADERS} bytes"),
            ));
        }
        let max = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.budget.left.set(Some(left - n as u64));
        Ok(n)
    }
}

/// Calls `f` on every entry of `ar` (which must read through a [`Bounded`] over `budget`), then
/// reads what `f` left of the entry's data. Moving to the next entry is all the tar crate reads
/// into memory — GNU long names and links, PAX records, sparse maps — so that step alone runs
/// under [`MAX_ENTRY_HEADERS`]; file data streams through `f` or is skipped.
pub fn for_each_entry<R: Read>(
    ar: &mut tar::Archive<Bounded<'_, R>>,
    budget: &HeaderBudget,
    what: &str,
    mut f: impl FnMut(&mut tar::Entry<'_, Bounded<'_, R>>) -> Result<(), ImageError>,
) -> Result<(), ImageError> {
    let mut entries = ar.entries().map_err(|e| corrupt(what, e))?;
    loop {
        budget.left.set(Some(MAX_ENTRY_HEADERS));
        budget.exceeded.set(false);
        let next = entries.next();
        budget.left.set(None);
        let Some(entry) = next else { return Ok(()) };
        let mut entry = entry.map_err(|e| {
            if budget.exceeded.get() {
                ImageError::Corrupt(format!(
                    "{what}: an entry's tar headers (GNU long name or link, PAX records) are \
                     larger than {} KiB; refused",
                    MAX_ENTRY_HEADERS >> 10
                ))
            } else {
                corrupt(what, error_chain(&e))
            }
        })?;
        f(&mut entry)?;
        io::copy(&mut entry, &mut io::sink()).map_err(|e| corrupt(what, e))?;
    }
}

/// An error and its sources, one line (tar wraps the interesting part in a source).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

enum EntryError {
    Bad(String),
    Io(io::Error),
}

impl From<io::Error> for EntryError {
    fn from(e: io::Error) -> Self {
        EntryError::Io(e)
    }
}

/// The entry's path relative to the layer root; `None` for the root itself. `..` is refused.
fn clean_path(p: &Path) -> Result<Option<PathBuf>, EntryError> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(EntryError::Bad("path escapes the layer root".into()))
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Makes sure `rel` exists below `root` as a real directory (no symlink on the way) and returns it.
fn ensure_dir(root: &Path, rel: &Path) -> Result<PathBuf, EntryError> {
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(EntryError::Bad(format!("{} is a symlink", cur.display())))
            }
            Ok(_) => {
                return Err(EntryError::Bad(format!(
                    "{} is not a directory",
                    cur.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                use std::os::unix::fs::PermissionsExt;
                fs::create_dir(&cur)?;
                fs::set_permissions(&cur, fs::Permissions::from_mode(0o755))?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(cur)
}

/// Files at least this large start their writeback as soon as they are unpacked.
const WRITEBACK_FROM: u64 = 256 << 10;

fn apply_entry<R: Read>(
    entry: &mut tar::Entry<R>,
    raw: &Path,
    dest: &Path,
) -> Result<(), EntryError> {
    let Some(rel) = clean_path(raw)? else {
        return Ok(());
    };
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = rel.parent().unwrap_or(Path::new(""));
    if name == OPAQUE_MARKER {
        let dir = ensure_dir(dest, parent)?;
        xattr::set(&dir, "trusted.overlay.opaque", b"y")?;
        return Ok(());
    }
    if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
        if target.is_empty() || target == "." || target == ".." {
            return Err(EntryError::Bad("invalid whiteout".into()));
        }
        let dir = ensure_dir(dest, parent)?;
        let path = dir.join(target);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&path)?,
            Ok(_) => fs::remove_file(&path)?,
            Err(_) => {}
        }
        crate::sys::make_whiteout(&path)?;
        return Ok(());
    }
    // tar refuses to write outside `dest` (through `..` or symlinks) on its own.
    if !entry.unpack_in(dest)? {
        return Err(EntryError::Bad("refused: outside the layer root".into()));
    }
    // A large file's pages start for the disk now, while later entries and layers unpack: the
    // syncfs before the image record (`Store::commit_image`) then waits for little. Best effort.
    if entry.header().entry_type().is_file() && entry.size() >= WRITEBACK_FROM {
        if let Err(e) = crate::sys::start_writeback(&dest.join(&rel)) {
            tracing::debug!(path = %rel.display(), error = %e, "starting writeback");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    fn header() -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_mode(0o644);
        h
    }

    fn tar_of(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = header();
            match data {
                Some(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(d.len() as u64);
                    h.set_mode(0o644);
                    h.set_cksum();
                    b.append_data(&mut h, path, *d).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    h.set_cksum();
                    b.append_data(&mut h, path, io::empty()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn digests_and_diff_id_of_gzip_zstd_and_plain() {
        let t = tar_of(&[("etc/", None), ("etc/hello", Some(b"hi\n"))]);
        let diff_id = sha256_digest(&t);
        let zst = zstd::encode_all(&t[..], 3).unwrap();
        for (blob, comp) in [
            (gzip(&t), Compression::Gzip),
            (zst, Compression::Zstd),
            (t.clone(), Compression::None),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let exp = LayerExpect {
                what: "layer".into(),
                digest: Some(sha256_digest(&blob)),
                size: Some(blob.len() as u64),
                diff_id: Some(diff_id.clone()),
            };
            let u = unpack_layer(&blob[..], &exp, dir.path()).unwrap();
            assert_eq!(u.compression, comp);
            assert_eq!(u.unpacked_size, t.len() as u64);
            assert_eq!(fs::read(dir.path().join("etc/hello")).unwrap(), b"hi\n");
        }
    }

    #[test]
    fn wrong_digest_and_diff_id_are_refused() {
        let t = tar_of(&[("a", Some(b"x"))]);
        let dir = tempfile::tempdir().unwrap();
        let exp = LayerExpect {
            what: "l".into(),
            digest: Some(sha256_digest(b"other")),
            ..Default::default()
        };
        assert!(matches!(
            unpack_layer(&t[..], &exp, dir.path()),
            Err(ImageError::DigestMismatch { .. })
        ));
        let exp = LayerExpect {
            what: "l".into(),
            diff_id: Some(sha256_digest(b"other")),
            ..Default::default()
        };
        assert!(matches!(
            unpack_layer(&t[..], &exp, dir.path()),
            Err(ImageError::DigestMismatch { .. })
        ));
        let exp = LayerExpect {
            what: "l".into(),
            size: Some(1),
            ..Default::default()
        };
        assert!(matches!(
            unpack_layer(&t[..], &exp, dir.path()),
            Err(ImageError::SizeMismatch { .. })
        ));
    }

    #[test]
    fn truncated_gzip_is_corrupt() {
        let blob = gzip(&tar_of(&[("a", Some(&[7u8; 5000]))]));
        let dir = tempfile::tempdir().unwrap();
        let r = unpack_layer(&blob[..blob.len() / 2], &LayerExpect::default(), dir.path());
        assert!(matches!(r, Err(ImageError::Corrupt(_))), "{r:?}");
    }

    #[test]
    fn parent_dir_escape_is_refused() {
        // tar::Builder refuses `..` itself, so write the name into the header by hand.
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..9].copy_from_slice(b"../escape");
        h.set_size(1);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut data = h.as_bytes().to_vec();
        data.extend_from_slice(&[b'x'; 512]);
        data.extend_from_slice(&[0; 1024]);
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("root");
        fs::create_dir(&dest).unwrap();
        assert!(unpack_layer(&data[..], &LayerExpect::default(), &dest).is_err());
        assert!(!outer.path().join("escape").exists());
    }

    // Whiteouts need mknod and trusted.* xattrs: root only (the test suite runs as root).
    #[test]
    fn whiteouts_and_opaque_dirs_become_overlayfs_markers() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let t = tar_of(&[
            ("etc/", None),
            ("etc/.wh.gone", Some(b"")),
            ("var/cache/", None),
            ("var/cache/.wh..wh..opq", Some(b"")),
            ("var/cache/new", Some(b"n")),
            ("deep/er/.wh.x", Some(b"")),
        ]);
        let dir = tempfile::tempdir().unwrap();
        unpack_layer(&t[..], &LayerExpect::default(), dir.path()).unwrap();
        let wh = fs::symlink_metadata(dir.path().join("etc/gone")).unwrap();
        assert!(wh.file_type().is_char_device());
        use std::os::unix::fs::MetadataExt;
        assert_eq!(wh.rdev(), 0);
        assert!(!dir.path().join("etc/.wh.gone").exists());
        assert_eq!(
            xattr::get(dir.path().join("var/cache"), "trusted.overlay.opaque").unwrap(),
            Some(b"y".to_vec())
        );
        assert!(!dir.path().join("var/cache/.wh..wh..opq").exists());
        assert!(dir.path().join("var/cache/new").exists());
        assert!(fs::symlink_metadata(dir.path().join("deep/er/x"))
            .unwrap()
            .file_type()
            .is_char_device());
    }

    #[test]
    fn whiteout_through_a_symlink_is_refused() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_cksum();
        b.append_link(&mut h, "link", "/tmp").unwrap();
        let mut h = header();
        h.set_size(0);
        h.set_cksum();
        b.append_data(&mut h, "link/.wh.victim", io::empty())
            .unwrap();
        let t = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let e = unpack_layer(&t[..], &LayerExpect::default(), dir.path()).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
    }

    /// A header of `kind` for a body of `size` bytes, in the GNU format tar writes.
    fn ext_header(kind: tar::EntryType, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        h.set_mode(0o644);
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    /// One PAX record: `<len> <key>=<value>\n`, where len counts itself.
    fn pax_record(key: &str, value: &str) -> String {
        let rest = format!(" {key}={value}\n");
        let mut len = rest.len() + 1;
        while (len.to_string().len() + rest.len()) != len {
            len += 1;
        }
        format!("{len}{rest}")
    }

    fn pad(v: &mut Vec<u8>) {
        v.resize(v.len().next_multiple_of(512), 0);
    }

    #[test]
    fn long_gnu_names_and_pax_paths_under_the_cap_unpack() {
        let long_dir = format!("usr/{}", ["segment"; 60].join("/")); // ~ 480 bytes
        let long_file = format!("{long_dir}/file");
        // tar::Builder writes GNU long-name (and long-link) entries for these.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(5);
        h.set_cksum();
        b.append_data(&mut h, &long_file, &b"long\n"[..]).unwrap();
        let mut h = header();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_cksum();
        b.append_link(&mut h, "short-link", &long_file).unwrap();
        let mut data = b.into_inner().unwrap();
        // Drop the end-of-archive blocks to append more entries.
        assert!(data.ends_with(&[0; 1024]));
        data.truncate(data.len() - 1024);
        // A PAX `path` and `linkpath` by hand: a file, then a hard link to it.
        let pax_path = format!("opt/{}/pax-file", "p".repeat(200));
        for (kind, path, body, link) in [
            (
                tar::EntryType::Regular,
                pax_path.as_str(),
                &b"pax\n"[..],
                None,
            ),
            (
                tar::EntryType::Link,
                "opt/hard",
                &b""[..],
                Some(pax_path.as_str()),
            ),
        ] {
            let mut records = pax_record("path", path);
            if let Some(l) = link {
                records.push_str(&pax_record("linkpath", l));
            }
            data.extend(ext_header(tar::EntryType::XHeader, records.len() as u64));
            data.extend(records.as_bytes());
            pad(&mut data);
            let mut h = tar::Header::new_ustar();
            h.set_path("truncated-name").unwrap();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h.set_mode(0o644);
            h.set_entry_type(kind);
            h.set_size(body.len() as u64);
            h.set_cksum();
            data.extend(h.as_bytes());
            data.extend(body);
            pad(&mut data);
        }
        data.extend([0; 1024]);
        let dir = tempfile::tempdir().unwrap();
        let exp = LayerExpect {
            what: "layer".into(),
            diff_id: Some(sha256_digest(&data)),
            ..Default::default()
        };
        unpack_layer(&gzip(&data)[..], &exp, dir.path()).unwrap();
        let d = dir.path();
        assert_eq!(fs::read(d.join(&long_file)).unwrap(), b"long\n");
        assert_eq!(
            fs::read_link(d.join("short-link")).unwrap(),
            Path::new(&long_file)
        );
        assert_eq!(fs::read(d.join(&pax_path)).unwrap(), b"pax\n");
        assert_eq!(fs::read(d.join("opt/hard")).unwrap(), b"pax\n");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(d.join("opt/hard")).unwrap().nlink(), 2);
        assert!(!d.join("truncated-name").exists());
    }

    /// A reader that counts what was taken from it.
    struct Counting<R>(R, std::rc::Rc<Cell<u64>>);
    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1.set(self.1.get() + n as u64);
            Ok(n)
        }
    }

    #[test]
    fn a_huge_long_name_link_or_pax_header_is_refused_without_reading_it() {
        const GIB: u64 = 1 << 30;
        for kind in [
            tar::EntryType::GNULongName,
            tar::EntryType::GNULongLink,
            tar::EntryType::XHeader,
        ] {
            // The header declares a 1 GiB body, and the stream really holds it (generated as
            // it is read, never in memory here).
            let head = ext_header(kind, GIB);
            let read = std::rc::Rc::new(Cell::new(0));
            let input = Counting(
                io::Cursor::new(head).chain(io::repeat(b'a').take(GIB)),
                read.clone(),
            );
            let dir = tempfile::tempdir().unwrap();
            let exp = LayerExpect {
                what: "layer sha256:abc of img".into(),
                ..Default::default()
            };
            let e = unpack_layer(input, &exp, dir.path()).unwrap_err();
            assert!(matches!(e, ImageError::Corrupt(_)), "{kind:?}: {e:?}");
            let msg = e.to_string();
            assert!(msg.starts_with("layer sha256:abc of img: "), "{msg}");
            assert!(msg.contains("larger than 256 KiB; refused"), "{msg}");
            // Stopped at the cap: the rest of the gigabyte was never read.
            assert!(
                read.get() < MAX_ENTRY_HEADERS + (1 << 20),
                "{kind:?}: read {}",
                read.get()
            );
            assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        }
    }

    #[test]
    fn the_header_cap_is_per_entry() {
        // Many entries whose long names together pass the cap are fine: it resets per entry.
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..300 {
            let mut h = header();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(1);
            h.set_cksum();
            let seg = "n".repeat(240);
            let name = format!("{i}/{seg}/{seg}/{seg}/{seg}");
            b.append_data(&mut h, name, &b"x"[..]).unwrap();
        }
        let t = b.into_inner().unwrap();
        assert!(t.len() as u64 > 2 * MAX_ENTRY_HEADERS);
        let dir = tempfile::tempdir().unwrap();
        unpack_layer(&t[..], &LayerExpect::default(), dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 300);
    }
}
