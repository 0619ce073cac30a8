//! A /proc or cgroupfs file kept open and re-read from the start on each sample.
//!
//! Opening a file under /proc or /sys/fs/cgroup costs a path walk each time (several
//! microseconds); these files regenerate their contents on every read from offset 0, so
//! one open file serves every sample.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

/// One kernel-generated text file, re-read in place.
#[derive(Debug)]
pub struct ProcFile {
    path: PathBuf,
    file: Option<File>,
    text: String,
}

impl ProcFile {
    /// A reader for `path`; nothing is opened until the first read.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            file: None,
            text: String::new(),
        }
    }

    /// The file's current contents, or `None` if it cannot be read.
    pub fn read(&mut self) -> Option<&str> {
        if self.read_once().is_none() {
            // The file may have been replaced (cgroup recreated): reopen once.
            self.file = None;
            self.read_once()?;
        }
        Some(&self.text)
    }

    fn read_once(&mut self) -> Option<()> {
        if self.file.is_none() {
            self.file = Some(File::open(&self.path).ok()?);
        }
        let file = self.file.as_mut()?;
        file.seek(SeekFrom::Start(0)).ok()?;
        self.text.clear();
        file.read_to_string(&mut self.text).ok()?;
        Some(())
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
        let _ = std::fs::remove_dir_all(&dir);
    }
}
