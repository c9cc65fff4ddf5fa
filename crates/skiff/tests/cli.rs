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

/// The bash completions complete: sourced into a real bash, they offer the subcommands and a
/// subcommand's flags.
#[test]
fn bash_completions_complete_commands_and_flags() {
    let (code, script, stderr) = output(&["completions", "bash"]);
    assert_eq!(code, Some(0), "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("skiff.bash");
    std::fs::write(&file, script).unwrap();
    let complete = |words: &str, index: usize| {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source '{}'; COMP_WORDS=({words}); COMP_CWORD={index}; \
                 COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; _skiff skiff; \
                 printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                file.display()
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let commands = complete("skiff u", 1);
    assert!(commands.lines().any(|l| l == "up"), "{commands}");
    assert!(commands.lines().any(|l| l == "usage"), "{commands}");
    let flags = complete("skiff up --wa", 2);
    assert!(flags.lines().any(|l| l == "--watch"), "{flags}");

    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let (code, script, stderr) = output(&["completions", shell]);
        assert_eq!(code, Some(0), "{shell}: {stderr}");
        assert!(script.contains("deploy"), "{shell}");
    }
    let (code, _, stderr) = output(&["completions", "tcsh"]);
    assert_eq!(code, Some(2), "{stderr}");
}

#[test]
fn man_pages_cover_every_command() {
    let (code, page, stderr) = output(&["man"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(page.contains(".TH skiff 1"), "{page}");
    assert!(
        page.contains("skiff \\- Run WebAssembly components"),
        "{page}"
    );
    // Each subcommand is listed.
    for command in ["up", "build", "new", "deploy", "completions"] {
        assert!(
            page.contains(&format!("skiff\\-{command}(1)")),
            "{command}: {page}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = output(&["man", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    for page in [
        "skiff.1",
        "skiff-up.1",
        "skiff-build.1",
        "skiff-apps-list.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}");
    }
    let up = std::fs::read_to_string(dir.path().join("skiff-up.1")).unwrap();
    assert!(up.contains("watch"), "{up}");
}
