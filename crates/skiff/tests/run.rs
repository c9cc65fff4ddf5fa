//! `skiff run`: WASI commands, both components and preview 1 core modules, against the real
//! binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use std::io::Write;
use std::process::{Output, Stdio};

use common::{guest, guest_p1, skiff};

fn run(args: &[&str]) -> Output {
    skiff()
        .arg("run")
        .args(args)
        .output()
        .expect("running skiff")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn exit_code_of_the_guest_becomes_skiffs() {
    for wasm in [guest("cli-guest"), guest_p1("cli-guest")] {
        let wasm = wasm.to_str().unwrap();
        assert_eq!(run(&[wasm, "exit", "0"]).status.code(), Some(0));
        assert_eq!(run(&[wasm, "exit", "7"]).status.code(), Some(7));
        assert_eq!(run(&[wasm, "exit", "42"]).status.code(), Some(42));
    }
}

#[test]
fn stdin_passes_through_to_stdout() {
    for wasm in [guest("cli-guest"), guest_p1("cli-guest")] {
        let mut child = skiff()
            .args(["run", wasm.to_str().unwrap(), "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        // Written from another thread: the guest's output must be read while input is still
        // going in, or both pipes fill up.
        let mut stdin = child.stdin.take().unwrap();
        let writer = {
            let input = input.clone();
            std::thread::spawn(move || stdin.write_all(&input).unwrap())
        };
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(output.stdout.len(), input.len());
        assert!(output.stdout == input, "stdout differs from stdin");
    }
}

#[test]
fn arguments_reach_the_guest() {
    let wasm = guest("cli-guest");
    let output = run(&[wasm.to_str().unwrap(), "args", "one", "--two", "three four"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "one\n--two\nthree four\n");
}

#[test]
fn environment_is_empty_unless_granted() {
    for wasm in [guest("cli-guest"), guest_p1("cli-guest")] {
        let wasm = wasm.to_str().unwrap();
        let output = run(&[wasm, "env-count"]);
        assert_eq!(stdout(&output), "0\n", "{}", stderr(&output));

        let output = run(&["--env", "GREETING=hi there", wasm, "env", "GREETING"]);
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(stdout(&output), "hi there\n");

        // skiff's own environment is not the guest's...
        let output = skiff()
            .env("SKIFF_TEST_SECRET", "s3cret")
            .args(["run", wasm, "env", "SKIFF_TEST_SECRET"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(3));
        // ...unless passed on by name.
        let output = skiff()
            .env("SKIFF_TEST_SECRET", "s3cret")
            .args(["run", "--env-inherit", "SKIFF_TEST_SECRET", wasm])
            .args(["env", "SKIFF_TEST_SECRET"])
            .output()
            .unwrap();
        assert_eq!(stdout(&output), "s3cret\n", "{}", stderr(&output));
    }
}

#[test]
fn files_are_reachable_only_through_a_granted_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("note.txt"), "from the host\n").unwrap();
    let host = dir.path().to_str().unwrap();
    for wasm in [guest("cli-guest"), guest_p1("cli-guest")] {
        let wasm = wasm.to_str().unwrap();
        let mapping = format!("{host}::/data");
        let output = run(&["--dir", &mapping, wasm, "read", "/data/note.txt"]);
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(stdout(&output), "from the host\n");

        // Without the grant the same read fails, and so does any host path.
        let output = run(&[wasm, "read", "/data/note.txt"]);
        assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
        let output = run(&[wasm, "read", "/etc/passwd"]);
        assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
        assert!(stdout(&output).is_empty());
    }
}

#[test]
fn a_missing_file_is_one_clear_line() {
    let output = run(&["/no/such/file.wasm"]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("/no/such/file.wasm"), "{err}");
    assert!(err.contains("cannot read"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn a_file_that_is_not_wasm_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script.wasm");
    std::fs::write(&path, "#!/bin/sh\necho hi\n").unwrap();
    let output = run(&[path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("script.wasm") && err.contains("not a WebAssembly file"),
        "{err}"
    );
}

#[test]
fn a_component_without_a_run_export_is_refused() {
    let wasm = guest("http-guest");
    let output = run(&[wasm.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("http_guest.wasm") && err.contains("wasi:cli/run"),
        "{err}"
    );
    assert!(err.contains("skiff serve"), "{err}");
}

#[test]
fn an_import_skiff_does_not_provide_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("needs-kv.wasm");
    let wasm = wat::parse_str(
        r#"(component
             (import "example:kv/store@1.0.0" (instance (export "get" (func (param "k" string)))))
           )"#,
    )
    .unwrap();
    std::fs::write(&path, wasm).unwrap();
    let output = run(&[path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("needs-kv.wasm"), "{err}");
    assert!(err.contains("example:kv/store@1.0.0"), "{err}");
    assert!(err.contains("does not provide"), "{err}");
}

#[test]
fn a_trapping_guest_is_reported_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trap.wasm");
    std::fs::write(
        &path,
        wat::parse_str(
            r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#,
        )
        .unwrap(),
    )
    .unwrap();
    let output = run(&[path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(134));
    let err = stderr(&output);
    assert!(
        err.contains("trap.wasm") && err.contains("trapped"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_command_past_its_timeout_is_stopped_as_a_trap() {
    // The guest computes for ever without a host call: only the epoch deadline can stop it.
    for wasm in [guest("cli-guest"), guest_p1("cli-guest")] {
        let started = std::time::Instant::now();
        let output = run(&["--timeout", "300ms", wasm.to_str().unwrap(), "spin"]);
        assert_eq!(output.status.code(), Some(134), "{}", stderr(&output));
        assert_eq!(stdout(&output), "spinning\n");
        let err = stderr(&output);
        assert!(err.contains("time limit of 300ms"), "{err}");
        // Not a timing assertion: without the limit it would never end at all.
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
    }
}

#[test]
fn a_command_waiting_on_input_is_stopped_at_its_timeout_too() {
    // `cat` blocks in a host call (reading stdin), where epochs do not reach.
    let mut child = skiff()
        .args(["run", "--timeout", "300ms"])
        .arg(guest("cli-guest"))
        .arg("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting skiff");
    let _stdin = child.stdin.take();
    let output = child.wait_with_output().expect("waiting for skiff");
    assert_eq!(output.status.code(), Some(134), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("time limit"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_command_over_its_memory_cap_is_refused_the_memory() {
    // Grows its memory by 32 MiB and traps if that is refused; returns otherwise.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grow.wasm");
    std::fs::write(
        &path,
        wat::parse_str(
            r#"(module (memory (export "memory") 1)
                 (func (export "_start")
                   (if (i32.eq (memory.grow (i32.const 512)) (i32.const -1))
                     (then unreachable))))"#,
        )
        .unwrap(),
    )
    .unwrap();
    let wasm = path.to_str().unwrap();
    let output = run(&["--max-memory", "16MiB", wasm]);
    assert_eq!(output.status.code(), Some(134), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("ran out of memory"), "{err}");
    // Without the cap (or with room), the same program runs to its end.
    assert_eq!(run(&[wasm]).status.code(), Some(0));
    assert_eq!(run(&["--max-memory", "64MiB", wasm]).status.code(), Some(0));
}

/// The program's stderr is its own: a first run (compiling, no cache) adds nothing to it when
/// stderr is not a terminal, for components and core modules alike.
#[test]
fn stderr_holds_only_what_the_program_writes() {
    for wasm in [guest("cli-guest"), guest_p1("cli-guest")] {
        let output = skiff()
            .args(["--no-cache", "run"])
            .arg(&wasm)
            .args(["stderr", "only this"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(stderr(&output), "only this\n", "{}", wasm.display());
    }
    // `--log-level` still shows skiff's own lines when asked.
    let output = skiff()
        .args(["--no-cache", "--log-level", "info", "run"])
        .arg(guest("cli-guest"))
        .args(["stderr", "x"])
        .output()
        .unwrap();
    assert!(stderr(&output).contains("compiling"), "{}", stderr(&output));
}
