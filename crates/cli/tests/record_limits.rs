//! `record` under a file-size limit (`ulimit -f`): the limit applies to the memfd of the
//! channel to traced processes too, which is large (address space; only written pages
//! cost memory). Within a low soft limit the recorder still works, and gives the
//! program its limit as it was; a hard limit too low for the channel is a clear error.

mod common;

use std::os::unix::process::CommandExt;

use common::*;

/// `record` with RLIMIT_FSIZE set to `soft`/`hard` bytes before it starts.
fn record_limited(t: &Fixture, soft: u64, hard: u64) -> std::process::Output {
    let mut c = record_cmd(&t.dir, &t.dev, &[]);
    c.args([os(&t.exe), os(&t.dev), "100".as_ref()]);
    // SAFETY: only setrlimit between fork and exec.
    unsafe {
        c.pre_exec(move || {
            let l = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.output().unwrap()
}

#[test]
fn a_low_soft_file_size_limit_still_records_and_the_program_keeps_it() {
    let t = Fixture::new("fsize-soft", "limits_fsize", 4096);
    let out = record_limited(&t, 1 << 20, libc::RLIM_INFINITY);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "fsize 1048576\n");
    assert_eq!(stderr(&out), "");
    let events = read_log(&trace_log(&t.dir));
    assert_eq!(write_values(&events), (0..100).collect::<Vec<u64>>());
    assert_device_words(&t.dev, &[(0x40, 99)]);
}

#[test]
fn a_hard_file_size_limit_below_the_channel_is_a_clear_error() {
    let t = Fixture::new("fsize-hard", "limits_fsize", 4096);
    let out = record_limited(&t, 1 << 20, 1 << 20);
    assert_exit(&out, 1);
    assert_eq!(
        stderr(&out),
        "mmio-trace: cannot create the shared-memory channel: the file-size limit (ulimit -f: \
         1048576 bytes) is below the 541 MiB of the shared memory (only written pages cost \
         memory); raise it, or set MMIO_TRACE_RINGS lower\n"
    );
    assert_eq!(stdout(&out), "", "the program did not run");
    assert!(!trace_log(&t.dir).exists());
}
