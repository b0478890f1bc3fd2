//! The benchmark commands of docs/benchmarks.md, run briefly on tiny inputs so that they
//! cannot rot. Nothing here measures anything: a debug build on a shared CI machine says
//! nothing about performance. It checks that every scenario runs to the end and reports.

use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run the benchmark binary");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn engine_bench_runs_every_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(Command::new(env!("CARGO_BIN_EXE_engine-bench")).args([
        "--dir",
        dir.path().to_str().unwrap(),
        "--duration",
        "0.2",
        "--events",
        "20000",
    ]));
    for what in [
        "disk_4k_fdatasync_per_s",
        "append_64w_x1",
        "append_16w_x100",
        "read_all",
        "read_stream_interleaved",
        "reopen_clean",
        "rebuild",
    ] {
        assert!(out.contains(what), "no {what:?} in the report:\n{out}");
    }
    let out = run(Command::new(env!("CARGO_BIN_EXE_engine-bench")).args([
        "--dir",
        dir.path().to_str().unwrap(),
        "--events",
        "20000",
        "--only",
        "indexes",
    ]));
    for what in [
        "read_derived $ce-cat7",
        "all_filtered_1pct_category",
        "all_filtered_10pct_type",
        "index_rebuild (derived on)",
        "derived_index_size",
    ] {
        assert!(out.contains(what), "no {what:?} in the report:\n{out}");
    }
}

#[test]
fn load_generator_runs_every_part_against_a_server_it_starts() {
    // `load` starts the `strata` binary next to it; make sure there is one.
    strata_tests::strata_bin();
    let dir = tempfile::tempdir().unwrap();
    let out = run(Command::new(env!("CARGO_BIN_EXE_load"))
        .current_dir(dir.path())
        .args([
            "--duration",
            "0.3",
            "--clients",
            "1,4",
            "--batch-clients",
            "2",
            "--group-consumers",
            "1,2",
            "--sub-rate",
            "500",
        ]));
    for what in [
        "transport_unary_4c",
        "transport_server_stream",
        "append_4c_x1",
        "append_2c_x100",
        "read_all",
        "read_stream",
        "subscription_latency",
        "persistent_group: 2 consumer(s)",
        "server_peak_rss",
    ] {
        assert!(out.contains(what), "no {what:?} in the report:\n{out}");
    }
}

#[test]
fn soak_runs_its_normal_and_hostile_load_and_reports_memory() {
    strata_tests::strata_bin();
    let dir = tempfile::tempdir().unwrap();
    let out = run(Command::new(env!("CARGO_BIN_EXE_soak"))
        .current_dir(dir.path())
        .args([
            "--duration",
            "1",
            "--writers",
            "4",
            "--groups",
            "10",
            "--subscribers",
            "5",
            "--silent",
            "5",
            "--stalled-reads",
            "2",
        ]));
    for what in [
        "soak_writers",
        "soak_hostile",
        "unexpected=0",
        "soak_server_rss_mib",
        "soak_operator list_groups=10 groups",
        "answering_after=true",
    ] {
        assert!(out.contains(what), "no {what:?} in the report:\n{out}");
    }
}
