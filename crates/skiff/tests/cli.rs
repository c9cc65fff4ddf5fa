//! The command-line contract that scripts rely on: version, help, and exit codes for misuse.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use common::skiff;

fn output(args: &[&str]) -> (Option<i32>, String, String) {
    let out = skiff().args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_and_help() {
    let (code, stdout, _) = output(&["--version"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        stdout.trim(),
        format!("skiff {}", env!("CARGO_PKG_VERSION"))
    );

    let (code, stdout, _) = output(&["help"]);
    assert_eq!(code, Some(0));
    for command in ["run", "serve", "up"] {
        assert!(stdout.contains(command), "{stdout}");
    }

    for (command, flag) in [("run", "--dir"), ("serve", "--listen"), ("up", "--listen")] {
        let (code, stdout, _) = output(&[command, "--help"]);
        assert_eq!(code, Some(0), "{command} --help");
        assert!(stdout.contains(flag), "{command} --help: {stdout}");
    }
}

#[test]
fn misuse_is_a_usage_error() {
    let (code, _, stderr) = output(&["serve"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("FILE"), "{stderr}");
    let (code, _, stderr) = output(&["up", "--listen", "not-an-address"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--listen"), "{stderr}");
}

#[test]
fn a_bad_env_flag_names_the_fix() {
    let wasm = common::guest("cli-guest");
    let (code, _, stderr) = output(&["run", "--env", "NOEQUALS", wasm.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("KEY=VALUE"), "{stderr}");
}
