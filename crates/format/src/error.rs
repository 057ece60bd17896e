//! Errors of the readers and writers.

use std::fmt;

/// A malformed record, located precisely enough for a person to fix the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number (text) or 1-based record number (binary).
    pub line: u64,
    /// 1-based byte column within the line (text) or byte offset in the file (binary).
    pub column: u64,
    /// What the reader expected there.
    pub expected: String,
    /// A short excerpt of what it found instead.
    pub found: String,
    /// Whether `line`/`column` are a record number and a file offset (binary input).
    pub binary: bool,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.binary {
            write!(
                f,
                "record {}, byte offset {}: expected {}, found {}",
                self.line, self.column, self.expected, self.found
            )
        } else {
            write!(
                f,
                "line {}, column {}: expected {}, found {}",
                self.line, self.column, self.expected, self.found
            )
        }
    }
}

impl std::error::Error for ParseError {}

/// Where a lenient reader stopped before the end of its input: damage it cannot read
/// past (a damaged access record or block of a binary log, whose successors are
/// deltas from it; compressed data that stops decompressing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stop {
    /// The damage: where, what was expected, what was found.
    pub error: ParseError,
    /// Bytes of the (decompressed) input from the damage to its end that were not
    /// read, when they could be counted.
    pub unread_bytes: Option<u64>,
}

/// Any failure of a reader or writer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The underlying file or stream failed. Transparent: its text and source are the
    /// `io::Error`'s, so that a chain of causes does not print it twice.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The input is not a well-formed log.
    #[error("{0}")]
    Parse(Box<ParseError>),
    /// An event cannot be represented in the requested output format.
    #[error("cannot write event: {0}")]
    Unrepresentable(String),
}

impl From<ParseError> for Error {
    fn from(p: ParseError) -> Self {
        Error::Parse(Box::new(p))
    }
}

impl Error {
    /// The parse error, when this is one.
    pub fn as_parse(&self) -> Option<&ParseError> {
        match self {
            Error::Parse(p) => Some(p),
            _ => None,
        }
    }
}

/// Renders at most 40 bytes of `bytes` for an error message.
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "end of line".to_string();
    }
    let cut = &bytes[..bytes.len().min(40)];
    let mut s = String::from("`");
    s.push_str(&String::from_utf8_lossy(cut).escape_debug().to_string());
    if cut.len() < bytes.len() {
        s.push_str("...");
    }
    s.push('`');
    s
}
