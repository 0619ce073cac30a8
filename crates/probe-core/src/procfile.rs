//! A /proc or cgroupfs file kept open and re-read from the start on each sample.
//!
//! Opening a file under /proc or /sys/fs/cgroup costs a path walk each time (several
//! microseconds); these files regenerate their contents on every read from offset 0, so
//! one open file serves every sample. They are read with `pread` from offset 0 into a
//! buffer kept between reads: no seek, and no `statx` to size a buffer (which reading to a
//! `String` costs on every call).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// The buffer's first size; it grows (and stays grown) for longer files.
const FIRST_CAPACITY: usize = 4096;

/// One kernel-generated text file, re-read in place.
#[derive(Debug)]
pub struct ProcFile {
    path: PathBuf,
    file: Option<File>,
    bytes: Vec<u8>,
    /// Valid bytes at the start of `bytes` after the last successful read.
    len: usize,
}

impl ProcFile {
    /// A reader for `path`; nothing is opened until the first read.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            file: None,
            bytes: Vec::new(),
            len: 0,
        }
    }

    /// The file's current contents, or `None` if it cannot be read.
    pub fn read(&mut self) -> Option<&str> {
        if self.read_once().is_none() {
            // The file may have been replaced (cgroup recreated): reopen once.
            self.file = None;
            self.read_once()?;
        }
        std::str::from_utf8(&self.bytes[..self.len]).ok()
    }

    fn read_once(&mut self) -> Option<()> {
        if self.file.is_none() {
            self.file = Some(File::open(&self.path).ok()?);
        }
        let file = self.file.as_ref()?;
        if self.bytes.is_empty() {
            self.bytes.resize(FIRST_CAPACITY, 0);
        }
        self.len = 0;
        loop {
            if self.len == self.bytes.len() {
                self.bytes.resize(self.bytes.len() * 2, 0);
            }
            match file.read_at(&mut self.bytes[self.len..], self.len as u64) {
                Ok(0) => return Some(()),
                Ok(n) => self.len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }

    /// The first whitespace-separated token parsed as a number.
    pub fn read_u64(&mut self) -> Option<u64> {
        self.read()?.split_whitespace().next()?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rereads_see_new_contents_and_replaced_files() {
        let dir = std::env::temp_dir().join(format!("runlens-procfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("value");
        std::fs::write(&path, "1\n").unwrap();
        let mut f = ProcFile::new(&path);
        assert_eq!(f.read_u64(), Some(1));
        std::fs::write(&path, "22\n").unwrap(); // same inode, rewritten
        assert_eq!(f.read_u64(), Some(22));
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "333\n").unwrap(); // a new file at the same path
        assert_eq!(
            f.read_u64(),
            Some(22),
            "the open file still reads the old one"
        );
        assert!(ProcFile::new(dir.join("missing")).read().is_none());
        // Longer than the first buffer, then shorter: each read sees exactly the file.
        let long = "x".repeat(3 * FIRST_CAPACITY + 5);
        let path = dir.join("long");
        std::fs::write(&path, &long).unwrap();
        let mut f = ProcFile::new(&path);
        assert_eq!(f.read(), Some(long.as_str()));
        std::fs::write(&path, "short\n").unwrap();
        assert_eq!(f.read(), Some("short\n"));
        // A kernel-generated file reads whole through positional reads.
        let mut status = ProcFile::new("/proc/self/status");
        assert!(
            status
                .read()
                .is_some_and(|t| t.contains("VmRSS") && t.ends_with('\n'))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
