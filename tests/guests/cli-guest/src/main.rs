//! A plain-std command-line guest for the host's `wasi:cli` tests.
//!
//! Built for `wasm32-wasip2` it is a `wasi:cli/run` component; built for `wasm32-wasip1` it is
//! a preview-1 core module. It uses plain `std` (the one exception is exiting on wasip2, see
//! `exit`), so both builds exercise exactly what an ordinary Rust program would ask of the
//! host. `argv[1]` picks the behaviour:
//!
//! | command            | does                                                              |
//! |--------------------|-------------------------------------------------------------------|
//! | `exit N`           | exits with code N (wasip2: via `exit-with-code` for 1..=255)      |
//! | `cat`              | copies stdin to stdout byte for byte until EOF                    |
//! | `env NAME`         | prints `$NAME` + `\n`; unset: `NAME is unset` on stderr, exit 3   |
//! | `env-count`        | prints the number of environment variables                        |
//! | `read PATH`        | prints the file; error: `error: <io error>` on stderr, exit 1     |
//! | `write PATH TEXT`  | writes TEXT to PATH (create/truncate); error: stderr, exit 1      |
//! | `ls PATH`          | prints the directory's entry names, sorted, one per line         |
//! | `args`             | prints the remaining arguments one per line                       |
//! | `stderr TEXT`      | prints TEXT (+ `\n`) to stderr                                    |
//! | `spin`             | prints `spinning`, then computes for ever without a host call     |
//! | anything else      | usage on stderr, exit 2                                           |

use std::io::{self, Read, Write};

const USAGE: &str = "usage: cli-guest <command> [args]
commands:
  exit N            exit with code N
  cat               copy stdin to stdout
  env NAME          print the value of NAME (exit 3 if unset)
  env-count         print the number of environment variables
  read PATH         print the contents of PATH
  write PATH TEXT   write TEXT to PATH
  ls PATH           list the entries of directory PATH, sorted
  args              print the remaining arguments, one per line
  stderr TEXT       print TEXT to stderr
  spin              print `spinning`, then compute for ever";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let words: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();

    match words.as_slice() {
        ["exit", code] => match code.parse::<i32>() {
            Ok(code) => exit(code),
            Err(_) => usage(),
        },
        ["cat"] => or_fail(cat()),
        ["env", name] => match std::env::var_os(name) {
            Some(value) => println!("{}", value.to_string_lossy()),
            None => {
                eprintln!("{name} is unset");
                exit(3);
            }
        },
        ["env-count"] => println!("{}", std::env::vars_os().count()),
        ["read", path] => or_fail(std::fs::read(path).and_then(|bytes| write_stdout(&bytes))),
        ["write", path, text] => or_fail(std::fs::write(path, text)),
        ["ls", path] => or_fail(ls(path)),
        ["args", rest @ ..] => {
            for arg in rest {
                println!("{arg}");
            }
        }
        ["stderr", text] => eprintln!("{text}"),
        ["spin"] => {
            println!("spinning");
            io::stdout().flush().ok();
            let mut x: u64 = 1;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        _ => usage(),
    }
}

/// Streams stdin to stdout in fixed-size chunks, so a large input never has to fit in memory.
fn cat() -> io::Result<()> {
    let mut stdin = io::stdin().lock();
    let mut stdout = io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        stdout.write_all(&buf[..n])?;
    }
    stdout.flush()
}

/// Entry names only (not full paths), sorted so the output does not depend on the host's
/// directory order.
fn ls(path: &str) -> io::Result<()> {
    let mut names = std::fs::read_dir(path)?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    let mut stdout = io::stdout().lock();
    for name in names {
        writeln!(stdout, "{name}")?;
    }
    stdout.flush()
}

fn write_stdout(bytes: &[u8]) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()
}

/// `std::process::exit`, except that the host sees the real code on wasip2 too. There std's
/// exit goes through `wasi:cli/exit.exit`, which only knows success or failure (every non-zero
/// code arrives as 1), so codes 1..=255 use `exit-with-code` (stable since WASI 0.2.12)
/// instead. Preview 1's `proc_exit` carries the code as is.
fn exit(code: i32) -> ! {
    #[cfg(all(target_os = "wasi", target_env = "p2"))]
    if let Ok(code @ 1..=255) = u8::try_from(code) {
        io::stdout().flush().ok();
        wasip2::cli::exit::exit_with_code(code);
    }
    std::process::exit(code)
}

/// Every I/O failure looks the same to the tests: `error: <io error>` on stderr and exit 1.
fn or_fail(result: io::Result<()>) {
    if let Err(e) = result {
        eprintln!("error: {e}");
        exit(1);
    }
}

fn usage() -> ! {
    eprintln!("{USAGE}");
    exit(2);
}
