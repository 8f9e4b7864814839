//! A file that rotates by size, between lines: when the next line would take `FILE` past its
//! limit, `FILE.N-1` becomes `FILE.N` (the oldest beyond the kept count is removed), ...,
//! `FILE` becomes `FILE.1`, and a new `FILE` is started. Files are created readable by their
//! owner only: the packs' captures can be sensitive.

use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

/// An append-only line file with size-based rotation.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: BufWriter<File>,
    size: u64,
}

fn open(path: &Path) -> std::io::Result<(BufWriter<File>, u64)> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let size = file.metadata()?.len();
    Ok((BufWriter::new(file), size))
}

impl RotatingFile {
    /// Opens (appends to) `path`; it is rotated when a line would take it past `max_bytes`,
    /// keeping `keep` rotated files.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> std::io::Result<Self> {
        let (file, size) = open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1),
            keep,
            file,
            size,
        })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(self.rotated(self.keep));
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
        }
        let (file, size) = open(&self.path)?;
        self.file = file;
        self.size = size;
        tracing::debug!(path = %self.path.display(), "output file rotated");
        Ok(())
    }

    /// Writes `line` and a newline, rotating first when they would not fit.
    ///
    /// # Errors
    /// When writing or rotating fails.
    pub fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.size += len;
        Ok(())
    }

    /// Writes out what is buffered.
    ///
    /// # Errors
    /// When writing fails.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn files_rotate_between_lines_and_only_the_kept_ones_stay() {
        let dir = std::env::temp_dir().join(format!("taskless-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.ndjson");
        let mut f = RotatingFile::open(&path, 20, 2).unwrap();
        for i in 0..7 {
            // 10 bytes with the newline: two lines per file.
            f.write_line(&format!("line-{i:04}")).unwrap();
        }
        f.flush().unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(&path), "line-0006\n");
        assert_eq!(read(&dir.join("x.ndjson.1")), "line-0004\nline-0005\n");
        assert_eq!(read(&dir.join("x.ndjson.2")), "line-0002\nline-0003\n");
        assert!(!dir.join("x.ndjson.3").exists(), "only two are kept");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Reopening appends and counts what is there.
        drop(f);
        let mut f = RotatingFile::open(&path, 20, 2).unwrap();
        f.write_line("line-0007").unwrap();
        f.write_line("line-0008").unwrap();
        f.flush().unwrap();
        assert_eq!(read(&path), "line-0008\n");
        assert_eq!(read(&dir.join("x.ndjson.1")), "line-0006\nline-0007\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
