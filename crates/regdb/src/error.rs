//! Errors in register databases, each naming the file and, where known, the line.

use std::fmt;

/// A database could not be read or is wrong; the message names file, line and
/// problem (`regs.toml:12: field EN: bit 40 is outside the 32-bit register`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The file the problem is in.
    pub file: String,
    /// 1-based line, where known.
    pub line: Option<u32>,
    /// What is wrong.
    pub message: String,
}

impl Error {
    /// A problem at `line` of `file`.
    pub fn at(file: impl Into<String>, line: Option<u32>, message: impl Into<String>) -> Error {
        Error {
            file: file.into(),
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file, l, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for Error {}

/// The 1-based line of byte `pos` in `text`.
pub(crate) fn line_of(text: &str, pos: usize) -> u32 {
    let pos = pos.min(text.len());
    text.as_bytes()[..pos]
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u32
        + 1
}

/// Parses a number the way databases write them: decimal, `0x` hex, `0b` binary.
pub(crate) fn parse_num(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s.replace('_', "");
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if let Some(b) = s.strip_prefix("0b").or_else(|| s.strip_prefix("0B")) {
        u64::from_str_radix(b, 2).ok()
    } else {
        s.parse().ok()
    }
}
