//! `skiff completions SHELL` and `skiff man`: shell completions and manual pages, made from the
//! same clap definitions that parse the command line, so they never drift from it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell, e.g. `bash`: `skiff completions bash > /etc/bash_completion.d/skiff`, or
    /// `source <(skiff completions bash)`; for zsh, a file `_skiff` in a folder of `$fpath`;
    /// for fish, `~/.config/fish/completions/skiff.fish`.
    shell: clap_complete::Shell,
}

#[derive(Args)]
pub struct ManArgs {
    /// Write skiff.1 and a page per command (skiff-up.1, skiff-apps-list.1, ...) into this
    /// folder, e.g. /usr/local/share/man/man1, instead of printing skiff(1).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub fn completions(args: CompletionsArgs) -> Result<ExitCode> {
    let mut command = crate::Cli::command();
    clap_complete::generate(args.shell, &mut command, "skiff", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

pub fn man(args: ManArgs) -> Result<ExitCode> {
    let command = crate::Cli::command();
    match args.out {
        None => clap_mangen::Man::new(command)
            .render(&mut std::io::stdout())
            .context("cannot write the manual page")?,
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
            clap_mangen::generate_to(command, &dir).with_context(|| {
                format!("cannot write the manual pages into `{}`", dir.display())
            })?;
            println!("wrote the manual pages into {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
