//! Loading a compiled seccomp filter (classic BPF, as libseccomp exports it) into the calling
//! thread with seccomp(2). libseccomp itself can only load a filter it has just compiled.

use std::io;

/// One BPF instruction as the kernel reads it (`struct sock_filter`, host byte order).
const INSN: usize = std::mem::size_of::<libc::sock_filter>();

/// Loads `bpf` (a whole number of `struct sock_filter`, as `seccomp_export_bpf` writes them)
/// with seccomp(SECCOMP_SET_MODE_FILTER, `flags`). The caller needs no_new_privs or
/// CAP_SYS_ADMIN, as the kernel demands.
pub fn set_filter(flags: u32, bpf: &[u8]) -> io::Result<()> {
    if bpf.is_empty() || bpf.len() % INSN != 0 || bpf.len() / INSN > u16::MAX as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a BPF program of {} bytes", bpf.len()),
        ));
    }
    let insns: Vec<libc::sock_filter> = bpf
        .chunks_exact(INSN)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    // The kernel takes at most BPF_MAXINSNS (4096) instructions; a longer program is refused
    // here rather than loaded cut short.
    let len = u16::try_from(insns.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seccomp program too long"))?;
    let prog = libc::sock_fprog {
        len,
        filter: insns.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `insns`, which lives until the call returns; the kernel copies
    // the program and does not keep the pointer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if rc > 0 {
        // With SECCOMP_FILTER_FLAG_TSYNC: the thread that could not be synchronised.
        return Err(io::Error::other(format!(
            "thread {rc} could not take the filter"
        )));
    }
    Ok(())
}

/// The most instructions the kernel takes in one filter (BPF_MAXINSNS).
pub const MAX_INSNS: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_program_that_is_not_whole_instructions() {
        assert_eq!(
            set_filter(0, &[0; 7]).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert_eq!(
            set_filter(0, &[]).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
