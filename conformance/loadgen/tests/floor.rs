//! `loadgen-floor` runs and prints its figures. It asserts no times: only that the
//! measurement was made and reported.

use std::process::Command;

#[test]
fn the_floor_benchmark_measures_a_few_calls() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen-floor"))
        .args(["--calls", "5", "--secs", "1"])
        .output()
        .expect("run loadgen-floor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("mode plain: 5 calls, 50 ticks"), "{stdout}");
    let bridge = stdout
        .lines()
        .find(|l| l.starts_with("bridge side:"))
        .expect("a bridge line");
    assert!(bridge.contains("% of one core per call"), "{bridge}");
}

#[test]
fn the_floor_benchmark_runs_with_epoll() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen-floor"))
        .args(["--calls", "3", "--secs", "1", "--mode", "epoll"])
        .output()
        .expect("run loadgen-floor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}\n{stdout}", out.status);
    assert!(stdout.contains("mode epoll: 3 calls, 50 ticks"), "{stdout}");
}

#[test]
fn the_floor_benchmark_refuses_zero_calls() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen-floor"))
        .args(["--calls", "0"])
        .output()
        .expect("run loadgen-floor");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--calls and --secs must be at least 1"));
}
