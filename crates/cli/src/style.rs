//! Colour on terminals, honouring `NO_COLOR` and `--color`.

use std::io::IsTerminal;

/// When to colour output.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColorChoice {
    /// Colour when standard output is a terminal and `NO_COLOR` is unset.
    #[default]
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// ANSI styles, or empty strings when colour is off.
#[derive(Clone, Copy)]
pub struct Style {
    pub read: &'static str,
    pub write: &'static str,
    pub mark: &'static str,
    pub map: &'static str,
    pub warn: &'static str,
    pub dim: &'static str,
    pub reset: &'static str,
}

impl Style {
    /// The styles for `choice` on standard output.
    pub fn new(choice: ColorChoice) -> Style {
        let on = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::io::stdout().is_terminal()
            }
        };
        if on {
            Style {
                read: "\x1b[32m",
                write: "\x1b[33m",
                mark: "\x1b[1;36m",
                map: "\x1b[35m",
                warn: "\x1b[1;31m",
                dim: "\x1b[2m",
                reset: "\x1b[0m",
            }
        } else {
            Style {
                read: "",
                write: "",
                mark: "",
                map: "",
                warn: "",
                dim: "",
                reset: "",
            }
        }
    }
}
