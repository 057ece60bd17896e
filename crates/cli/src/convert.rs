//! `mmio-trace convert`: text <-> binary, losslessly.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use mmio_trace_format::{AnyWriter, Format};

use crate::analyse::Progress;
use crate::input::{BadInput, InputArgs, LogInput};

/// Output formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum OutFormat {
    /// The Linux kernel mmiotrace text format (what demmio reads).
    Text,
    /// mmio-trace's compact binary format (keeps widths up to 64 bytes).
    Binary,
}

/// Convert a log between the kernel text format and the compact binary format.
///
/// The input format (and any gzip/xz/zstd compression) is detected from the content.
/// Conversions are lossless: text -> binary -> text gives back the original bytes.
/// OUT may be the input itself (also through another name or link): the result is
/// written beside it and replaces it only once complete and only if the input read
/// without damage; otherwise the input is left as it was. New files are made
/// readable by their owner only (mode 0600); a converted-in-place log keeps its mode.
#[derive(clap::Args)]
pub struct ConvertArgs {
    /// Format to write.
    #[arg(long, value_enum)]
    to: OutFormat,

    #[command(flatten)]
    input: InputArgs,

    /// Where to write; `-` is standard output.
    #[arg(value_name = "OUT")]
    output: PathBuf,
}

/// Identity of a file: device and inode.
type FileId = (u64, u64);

fn id_of(meta: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// The file behind standard input or output, when it is a regular file.
fn stdio_file(fd: std::os::fd::BorrowedFd<'_>) -> Option<std::fs::Metadata> {
    let f = std::fs::File::from(fd.try_clone_to_owned().ok()?);
    f.metadata().ok().filter(|m| m.is_file())
}

/// Where `convert` writes.
enum Sink {
    Stdout,
    /// A file of its own.
    File,
    /// The input itself: written to `tmp` beside it, renamed over `target` at the end.
    Replace {
        tmp: PathBuf,
        target: PathBuf,
    },
}

/// Runs `convert`.
pub fn run(args: ConvertArgs) -> anyhow::Result<ExitCode> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    let in_meta = if args.input.log == std::path::Path::new("-") {
        stdio_file(std::io::stdin().as_fd())
    } else {
        std::fs::metadata(&args.input.log).ok()
    };
    // Only a regular file can be the same file as the output in a way that matters
    // (and be replaced): `convert /dev/null /dev/null` must not replace /dev/null.
    let in_id = in_meta.as_ref().filter(|m| m.is_file()).map(id_of);
    let in_name = args.input.log.display().to_string();
    let mut input = LogInput::open(&args.input)?;
    let out_name = args.output.display().to_string();
    let (sink, file): (Sink, Option<std::fs::File>) = if out_name == "-" {
        // `convert IN - >> IN` would read what it writes, without end.
        if in_id.is_some() && stdio_file(std::io::stdout().as_fd()).map(|m| id_of(&m)) == in_id {
            return Err(BadInput(format!(
                "standard output is the input log {in_name}: write to another file, or \
                 name it as OUT to convert it in place"
            ))
            .into());
        }
        (Sink::Stdout, None)
    } else if in_id.is_some() && std::fs::metadata(&args.output).ok().map(|m| id_of(&m)) == in_id {
        // In place (the same file, also through a link): written beside it and
        // renamed over it once complete, so the input is read whole first.
        let target = std::fs::canonicalize(&args.output)
            .with_context(|| format!("cannot resolve {out_name}"))?;
        let dir = target.parent().unwrap_or(std::path::Path::new("/"));
        let base = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{base}.mmio-trace-convert.{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        (Sink::Replace { tmp, target }, Some(f))
    } else {
        // Traces show what a program did with a device: readable by their owner only.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&args.output)
            .with_context(|| format!("cannot create {out_name}"))?;
        (Sink::File, Some(f))
    };
    let result = convert(&mut input, file.as_ref(), &out_name, args.to);
    match (sink, result) {
        (Sink::Replace { tmp, .. }, Err(e)) => {
            let _ = std::fs::remove_file(&tmp);
            let bad = e.chain().any(|c| c.downcast_ref::<BadInput>().is_some());
            let msg = crate::error_message(&e);
            let msg = format!(
                "{}; {in_name} was left as it was",
                msg.strip_prefix("mmio-trace: ").unwrap_or(&msg)
            );
            Err(if bad {
                BadInput(msg).into()
            } else {
                anyhow::anyhow!(msg)
            })
        }
        (Sink::Replace { tmp, target }, Ok(())) => {
            if input.skipped() > 0 || input.stopped() || input.unknown_records() > 0 {
                let _ = std::fs::remove_file(&tmp);
                input.report_skipped();
                return Err(BadInput(format!(
                    "{in_name} was left as it was: converting it in place would lose what \
                     could not be read; convert it to another file"
                ))
                .into());
            }
            let f = file.expect("a file for a replacement");
            if let Some(m) = &in_meta {
                // The replacement keeps the input's owner and permissions, as far as
                // this user may give them.
                use std::os::unix::fs::MetadataExt;
                let _ = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()));
                let _ = f.set_permissions(std::fs::Permissions::from_mode(m.mode() & 0o7777));
            }
            let renamed = f
                .sync_all()
                .and_then(|()| std::fs::rename(&tmp, &target))
                .with_context(|| format!("cannot replace {}", target.display()));
            if renamed.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            renamed?;
            input.report_skipped();
            Ok(ExitCode::SUCCESS)
        }
        (_, Err(e)) => Err(e),
        (_, Ok(())) => {
            input.report_skipped();
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Converts every event of `input` into `file` (standard output when `None`). On a
/// read error, everything before it has been written.
fn convert(
    input: &mut LogInput,
    file: Option<&std::fs::File>,
    out_name: &str,
    to: OutFormat,
) -> anyhow::Result<()> {
    let sink: Box<dyn Write> = match file {
        Some(f) => Box::new(
            f.try_clone()
                .with_context(|| format!("writing {out_name}"))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let format = match to {
        OutFormat::Text => Format::Text,
        OutFormat::Binary => Format::Binary,
    };
    let mut w = AnyWriter::new(sink, format).with_context(|| format!("writing {out_name}"))?;
    let mut progress = Progress::new();
    let read = input.for_each_event(|ev, seen| {
        w.write_event(ev)
            .with_context(|| format!("writing {out_name}"))?;
        progress.tick(seen);
        Ok(())
    });
    if let Err(e) = read {
        // Everything before the bad input was converted: keep it (a damaged log's good
        // part is often what the user wants), then report the error.
        let _ = w.flush();
        progress.finish();
        return Err(e);
    }
    w.flush().with_context(|| format!("writing {out_name}"))?;
    progress.finish();
    Ok(())
}
