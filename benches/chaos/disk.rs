//! The file system the disk-full scenario fills: a size-limited tmpfs,
//! mounted in a mount namespace private to this process (so it disappears
//! with it whatever happens) and unmounted by a guard, and the filler that
//! takes its last byte.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Makes this process's mounts private to it: a tmpfs mounted later
/// disappears with the process even if it is killed before it unmounts.
/// Must run before any thread is started. Returns whether it worked.
pub fn private_mount_namespace() -> bool {
    // SAFETY: plain syscalls with constant arguments, single-threaded here.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return false;
        }
        let root = CString::new("/").expect("static");
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) == 0
    }
}

/// A tmpfs of a given size, unmounted when dropped.
pub struct Tmpfs {
    pub dir: PathBuf,
    mounted: bool,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "2m") on `dir` (created).
    pub fn mount(dir: &Path, size: &str) -> Result<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("not running as root");
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let target = CString::new(dir.as_os_str().as_encoded_bytes()).context("mount point")?;
        let fstype = CString::new("tmpfs").expect("static");
        let options = CString::new(format!("size={size},mode=0755")).context("options")?;
        // SAFETY: valid C strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                options.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("mount -t tmpfs -o size={size} tmpfs {}", dir.display()));
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
            mounted: true,
        })
    }

    /// Unmounts (lazily if busy).
    pub fn unmount(&mut self) {
        if !self.mounted {
            return;
        }
        if let Ok(target) = CString::new(self.dir.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid C string; umount2 touches nothing else.
            unsafe {
                if libc::umount2(target.as_ptr(), 0) != 0 {
                    libc::umount2(target.as_ptr(), libc::MNT_DETACH);
                }
            }
        }
        self.mounted = false;
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Writes `path` in 64 KiB chunks until the file system is full (ENOSPC);
/// returns the bytes written.
pub fn fill_until_enospc(path: &Path) -> Result<u64> {
    use std::io::Write;
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let chunk = vec![0x5au8; 64 * 1024];
    let mut written = 0u64;
    // Bounded: a tmpfs of a few MiB fills long before this.
    for _ in 0..65_536 {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e).context("writing the filler"),
        }
    }
    // Small writes for the last partial chunk's worth of space.
    for _ in 0..16_384 {
        match f.write(&chunk[..256]) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = f.sync_all();
    Ok(written)
}
