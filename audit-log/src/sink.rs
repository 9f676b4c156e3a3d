//! Where audit lines go: stdout, or a file rotated by size. Both buffer what the writer
//! hands them (many lines at a time) and write it on [`Sink::flush`], so a burst costs one
//! write, not one per line.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::config::SinkSettings;

/// Flush early past this much buffered text.
pub const BUFFER_BYTES: usize = 64 << 10;

/// An open sink.
pub trait Sink: Send {
    /// Buffers whole lines (each with its newline); may write (and rotate) first.
    fn append(&mut self, lines: &[u8]) -> io::Result<()>;
    /// Writes everything buffered.
    fn flush(&mut self) -> io::Result<()>;
    /// Bytes buffered, not yet written.
    fn buffered(&self) -> usize;
}

/// Opens the configured sink. A file is opened for appending (a FIFO's open blocks until
/// a reader comes: the writer thread waits there, requests do not).
pub fn open(settings: &SinkSettings) -> io::Result<Box<dyn Sink>> {
    Ok(match settings {
        SinkSettings::Stdout => Box::new(Stdout { buffer: Vec::new() }),
        SinkSettings::File {
            path,
            max_bytes,
            keep,
        } => Box::new(RotatingFile::open(path.clone(), *max_bytes, *keep)?),
    })
}

struct Stdout {
    buffer: Vec<u8>,
}

impl Sink for Stdout {
    fn append(&mut self, lines: &[u8]) -> io::Result<()> {
        self.buffer.extend_from_slice(lines);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut out = io::stdout().lock();
        let written = out.write_all(&self.buffer).and_then(|()| out.flush());
        // Written or not, these lines are settled (counted by the writer).
        self.buffer.clear();
        written
    }

    fn buffered(&self) -> usize {
        self.buffer.len()
    }
}

/// `path`, rotated to `path.1` (newest) … `path.keep` (oldest) before a line would take
/// it past `max_bytes`; a single line longer than that still goes in, alone.
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    /// Bytes in the file, buffered ones included.
    size: u64,
    max_bytes: u64,
    keep: u32,
    buffer: Vec<u8>,
}

impl RotatingFile {
    pub fn open(path: PathBuf, max_bytes: u64, keep: u32) -> io::Result<Self> {
        let file = append_to(&path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path,
            file,
            size,
            max_bytes,
            keep,
            buffer: Vec::new(),
        })
    }

    /// `path.i` → `path.(i+1)` from the oldest down (`path.keep` is overwritten), then
    /// `path` → `path.1`, and a new, empty `path`.
    fn rotate(&mut self) -> io::Result<()> {
        for i in (1..self.keep).rev() {
            match std::fs::rename(numbered(&self.path, i), numbered(&self.path, i + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, numbered(&self.path, 1))?;
        self.file = append_to(&self.path)?;
        self.size = 0;
        Ok(())
    }

    fn append_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.flush()?;
            self.rotate()?;
        }
        self.buffer.extend_from_slice(line);
        self.size += len;
        Ok(())
    }
}

impl Sink for RotatingFile {
    fn append(&mut self, lines: &[u8]) -> io::Result<()> {
        let len = lines.len() as u64;
        if self.size + len <= self.max_bytes {
            // No line of these takes the file past max_bytes: no rotation, one copy.
            self.buffer.extend_from_slice(lines);
            self.size += len;
            return Ok(());
        }
        for line in lines.split_inclusive(|&b| b == b'\n') {
            self.append_line(line)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let written = self.file.write_all(&self.buffer);
        self.buffer.clear();
        if written.is_err() {
            // What reached the file is unknown; read it again on the next open.
            self.size = self.file.metadata().map_or(self.size, |m| m.len());
        }
        written
    }

    fn buffered(&self) -> usize {
        self.buffer.len()
    }
}

fn append_to(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// `audit.log` → `audit.log.3`.
pub fn numbered(path: &Path, i: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_keep_files_none_past_max_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let mut f = RotatingFile::open(path.clone(), 100, 3).expect("open");
        let line = b"0123456789012345678901234567890123456789\n"; // 41 bytes: two per file
        for _ in 0..20 {
            f.append(line).expect("append");
            f.flush().expect("flush");
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["audit.log", "audit.log.1", "audit.log.2", "audit.log.3"]
        );
        for n in &names {
            let len = std::fs::metadata(dir.path().join(n)).expect("meta").len();
            assert_eq!(len, 82, "{n}: two whole lines");
        }
        // A line longer than max_bytes goes in alone.
        let long = vec![b'x'; 150];
        f.append(&long).expect("long");
        f.flush().expect("flush");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 150);
    }

    #[test]
    fn many_lines_at_once_rotate_between_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let mut f = RotatingFile::open(path.clone(), 100, 9).expect("open");
        let line = b"0123456789012345678901234567890123456789\n"; // 41 bytes: two per file
        f.append(&line.repeat(3)).expect("three at once");
        f.append(&line.repeat(2)).expect("two at once");
        f.flush().expect("flush");
        let len = |p: &Path| std::fs::metadata(p).expect("meta").len();
        // Five lines, two a file: the oldest file, the next, and the last line live.
        assert_eq!(len(&numbered(&path, 2)), 82);
        assert_eq!(len(&numbered(&path, 1)), 82);
        assert_eq!(len(&path), 41);
        for p in [numbered(&path, 2), numbered(&path, 1), path.clone()] {
            let text = std::fs::read_to_string(&p).expect("read");
            assert!(
                text.lines().all(|l| l.as_bytes() == &line[..40]),
                "whole lines: {text:?}"
            );
        }
    }
}
