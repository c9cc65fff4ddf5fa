//! A `wasi:cli/run` 0.3 command: the async `run` export of WASIp3, as the `wasip3` crate builds
//! it. `argv[1]` picks the behaviour:
//!
//! | command          | does                                                                |
//! |------------------|---------------------------------------------------------------------|
//! | `hello`          | writes `hello from a WASI 0.3 command` through `wasi:cli/stdout@0.3` |
//! | `args`           | prints the remaining arguments one per line                         |
//! | `env NAME`       | prints `$NAME`; unset: `NAME is unset` on stderr, fails             |
//! | `read PATH`      | prints the file; error: `error: <io error>` on stderr, fails        |
//! | `sleep MS`       | waits MS milliseconds on `wasi:clocks@0.3`, then prints `slept`      |
//! | `spin`           | computes for ever without a host call                               |
//! | `fail`           | returns `err` from `run`: the command fails (exit code 1)           |
//! | anything else    | usage on stderr, fails                                              |

wasip3::cli::command::export!(Command);

struct Command;

impl wasip3::exports::cli::run::Guest for Command {
    async fn run() -> Result<(), ()> {
        let args: Vec<String> = std::env::args().collect();
        match args.get(1).map(String::as_str) {
            Some("hello") => {
                let (mut tx, rx) = wasip3::wit_stream::new();
                let write = async {
                    let _ = tx
                        .write_all(b"hello from a WASI 0.3 command\n".to_vec())
                        .await;
                    drop(tx);
                };
                // The host reads the stream while the guest writes it.
                let read = async { wasip3::cli::stdout::write_via_stream(rx).await };
                let (result, ()) = futures::join!(read, write);
                result.map_err(drop)
            }
            Some("args") => {
                for arg in &args[2..] {
                    println!("{arg}");
                }
                Ok(())
            }
            Some("env") => {
                let name = args.get(2).map(String::as_str).unwrap_or_default();
                match std::env::var(name) {
                    Ok(value) => {
                        println!("{value}");
                        Ok(())
                    }
                    Err(_) => {
                        eprintln!("{name} is unset");
                        Err(())
                    }
                }
            }
            Some("read") => {
                let path = args.get(2).map(String::as_str).unwrap_or_default();
                match std::fs::read_to_string(path) {
                    Ok(text) => {
                        print!("{text}");
                        Ok(())
                    }
                    Err(err) => {
                        eprintln!("error: {err}");
                        Err(())
                    }
                }
            }
            Some("sleep") => {
                let ms: u64 = args.get(2).and_then(|ms| ms.parse().ok()).unwrap_or(10);
                wasip3::clocks::monotonic_clock::wait_for(ms * 1_000_000).await;
                println!("slept");
                Ok(())
            }
            Some("spin") => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Some("fail") => Err(()),
            _ => {
                eprintln!("usage: cli-p3-guest hello|args ...|env NAME|read PATH|sleep MS|spin|fail");
                Err(())
            }
        }
    }
}
