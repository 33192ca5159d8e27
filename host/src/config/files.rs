//! Reading the files a policy names (the policy, its plugins, a model's card), checked before
//! a byte is read: a directory, a FIFO (whose open would block), a device or a file larger
//! than its kind may be is refused with what it is, never read whole and then refused.

use std::io::Read;
use std::path::Path;

/// The largest policy file or model card read: 1 MiB (the shipped policy is 5 KiB).
pub const MAX_TEXT_BYTES: u64 = 1 << 20;
/// The largest plugin read: 64 MiB (a Python plugin built by componentize-py is ~40 MiB; the
/// Rust plugins ~100 KiB).
pub const MAX_PLUGIN_BYTES: u64 = 64 << 20;
/// The largest ONNX model a policy may name: 256 MiB (the shipped ones are under 1 MiB).
pub const MAX_MODEL_BYTES: u64 = 256 << 20;

/// Why a file could not be read, each with its fix.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("does not exist")]
    Missing,
    #[error("is a directory, not a file")]
    Directory,
    #[error("is not a regular file (a FIFO, socket or device), which Augur does not read")]
    NotRegular,
    #[error("is {size} bytes, more than the {max} bytes a file of this kind may be")]
    TooLarge { size: u64, max: u64 },
    #[error("is not UTF-8 text (the first bad byte is at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("cannot be read: {0}")]
    Io(std::io::Error),
}

impl FileError {
    /// What to do about it.
    pub fn fix(&self) -> &'static str {
        match self {
            FileError::Missing => "fix the path (relative to the policy file)",
            FileError::Directory | FileError::NotRegular => "name a regular file",
            FileError::TooLarge { .. } => "check that the path names the right file",
            FileError::NotUtf8 { .. } => "save the file as UTF-8",
            FileError::Io(_) => "check the file's permissions",
        }
    }

    /// `fix`, or `missing` when the file does not exist (a kind of file may say how it is made).
    pub fn fix_or<'a>(&self, missing: &'a str) -> &'a str {
        if matches!(self, FileError::Missing) { missing } else { self.fix() }
    }
}

/// The file's bytes, if it is a regular file of at most `max` bytes.
pub fn read(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    let meta = checked(path, max)?;
    let file = std::fs::File::open(path).map_err(FileError::Io)?;
    // The file may grow between the check and the read: read at most one byte past `max`.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes).map_err(FileError::Io)?;
    if bytes.len() as u64 > max {
        return Err(FileError::TooLarge { size: bytes.len() as u64, max });
    }
    Ok(bytes)
}

/// The file's text, if it is a regular UTF-8 file of at most `max` bytes.
pub fn read_text(path: &Path, max: u64) -> Result<String, FileError> {
    String::from_utf8(read(path, max)?).map_err(|e| FileError::NotUtf8 { offset: e.utf8_error().valid_up_to() })
}

/// Whether `path` can be read as a file of at most `max` bytes, without reading it.
pub fn readable(path: &Path, max: u64) -> Result<(), FileError> {
    checked(path, max).map(drop)
}

/// The file's metadata, if it is a regular file of at most `max` bytes.
fn checked(path: &Path, max: u64) -> Result<std::fs::Metadata, FileError> {
    let meta = std::fs::metadata(path).map_err(|e| if e.kind() == std::io::ErrorKind::NotFound { FileError::Missing } else { FileError::Io(e) })?;
    if meta.is_dir() {
        return Err(FileError::Directory);
    }
    if !meta.is_file() {
        return Err(FileError::NotRegular);
    }
    if meta.len() > max {
        return Err(FileError::TooLarge { size: meta.len(), max });
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_file_gets_its_own_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read(&dir.path().join("none"), 10), Err(FileError::Missing)));
        assert!(matches!(read(dir.path(), 10), Err(FileError::Directory)));
        let big = dir.path().join("big");
        std::fs::write(&big, [b'x'; 11]).unwrap();
        assert!(matches!(read(&big, 10), Err(FileError::TooLarge { size: 11, max: 10 })));
        let latin = dir.path().join("latin");
        std::fs::write(&latin, b"name: caf\xe9").unwrap();
        assert!(matches!(read_text(&latin, 100), Err(FileError::NotUtf8 { offset: 9 })));
        assert_eq!(read_text(&big, 11).unwrap(), "x".repeat(11));
        assert!(matches!(read(Path::new("/dev/null"), 10), Err(FileError::NotRegular)));
    }
}
