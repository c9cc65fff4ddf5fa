//! {{app-name}}: a command-line program for WASI. `skiff run` gives it its arguments and stdio
//! and nothing else: no files unless `--dir` grants a folder, no environment unless `--env`
//! sets a variable.

use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--count-stdin") {
        let mut input = Vec::new();
        if let Err(err) = std::io::stdin().read_to_end(&mut input) {
            eprintln!("{{app-name}}: cannot read stdin: {err}");
            return ExitCode::FAILURE;
        }
        println!("{} bytes on stdin", input.len());
        return ExitCode::SUCCESS;
    }
    let who = std::env::var("GREETING_NAME").unwrap_or_else(|_| "world".to_string());
    println!("Hello, {who}, from {{app-name}}!");
    if !args.is_empty() {
        println!("arguments: {}", args.join(" "));
    }
    ExitCode::SUCCESS
}
