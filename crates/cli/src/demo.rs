//! `mmio-trace demo`: thin glue over `mmio_trace_record::demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Run the built-in example driver on a simulated device, under `record`, and print the
/// trace.
///
/// The simulated device is a small DMA engine whose registers live in a temporary file;
/// the driver maps it as it would map a PCI BAR, resets the engine, programs one
/// transfer and acknowledges the interrupt. This is what `mmio-trace record` makes of it.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Also keep the trace in FILE.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// Internal: run only the driver against this device file.
    #[arg(long, hide = true, value_name = "DEVICE")]
    driver: Option<PathBuf>,
}

/// Runs `demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if let Some(dev) = args.driver {
        eprintln!("{}", mmio_trace_record::demo::run_driver(&dev)?);
        return Ok(ExitCode::SUCCESS);
    }
    let dir = std::env::temp_dir().join(format!("mmio-trace-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // The scratch folder holds the device (and the trace, without -o): removed on every
    // way out, once the trace is printed.
    let cleanup = Cleanup(dir.clone());
    let dev = dir.join("dma-engine.regs");
    mmio_trace_record::demo::create_device(&dev)?;
    let log = args
        .output
        .clone()
        .unwrap_or_else(|| dir.join("demo.mmiotrace"));
    let exe = std::env::current_exe()?;
    let mut opts = mmio_trace_record::Options::new(
        vec![
            exe.into(),
            "demo".into(),
            "--driver".into(),
            dev.clone().into(),
        ],
        Some(log.clone()),
    );
    opts.devices = vec![dev.to_string_lossy().into_owned()];
    opts.no_default_devices = true;
    opts.status = false;
    eprintln!(
        "$ mmio-trace record --device {} -- <example driver>",
        dev.display()
    );
    let out = mmio_trace_record::record(&opts).context("recording the demo driver")?;
    // The trace as the log holds it, each access followed by its register and fields
    // from the demo device's database (registers/demo.toml, built in).
    let mut input = crate::input::LogInput::open_path(&log, false)?;
    let mut names = crate::regnames::Names::demo()?;
    let mut skipped = 0;
    let mut objects = 0;
    let mut line = Vec::new();
    input.for_each_event(|ev, _| {
        names.observe(ev);
        // The PCIDEV header lines describe this machine's PCI devices (demmio needs
        // them); they say nothing about the demo, so they are left out of the printout.
        if matches!(ev, mmio_trace_format::Event::PciDev(_)) {
            skipped += 1;
            return Ok(());
        }
        // So are the loaded objects (for naming call sites: `show` uses them).
        if let mmio_trace_format::Event::Mark(m) = ev {
            if crate::symbols::ObjectMark::parse(&m.text).is_some() {
                objects += 1;
                return Ok(());
            }
        }
        line.clear();
        mmio_trace_format::text::write_event(&mut line, ev);
        let text = String::from_utf8_lossy(&line);
        match ev {
            mmio_trace_format::Event::Access(a) => match names.describe(a) {
                Some(d) => println!("{:<58} {d}", text.trim_end()),
                None => print!("{text}"),
            },
            _ => print!("{text}"),
        }
        Ok(())
    })?;
    if skipped > 0 || objects > 0 {
        eprintln!("({skipped} PCIDEV header lines and {objects} loaded-object markers not shown)");
    }
    eprintln!(
        "{} events; each R/W line: width, time (s), map id, address, value, pc, thread id, then the register it names",
        out.events
    );
    drop(cleanup);
    Ok(ExitCode::from(out.exit.code()))
}

/// Removes the demo's scratch folder when dropped (on every return path).
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
