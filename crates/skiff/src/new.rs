//! `skiff new TEMPLATE NAME`: a working app in a new folder, from a template compiled into the
//! binary (`templates/`), so it works offline and always matches this skiff. Each template is
//! a folder whose files are copied with `{{app-name}}` (the name) and `{{app_name}}` (the name
//! with `_` for `-`, as Rust names a library's file) filled in; a template that needs the WASI
//! HTTP interfaces as WIT gets the shared `templates/wit-http` as its `wit/`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use include_dir::{Dir, include_dir};

static TEMPLATES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates");

/// The WIT of `wasi:http/proxy`, for the toolchains that read it at build time.
const HTTP_WIT: &str = "wit-http";

struct Template {
    name: &'static str,
    summary: &'static str,
    /// What must be installed to build it.
    needs: &'static str,
    /// Gets the `wasi:http/proxy` WIT as `wit/`.
    http_wit: bool,
}

const ALL: &[Template] = &[
    Template {
        name: "http-rust",
        summary: "HTTP component in Rust (the wasip2 crate)",
        needs: "Rust with `rustup target add wasm32-wasip2`",
        http_wit: false,
    },
    Template {
        name: "http-python",
        summary: "HTTP component in Python (componentize-py)",
        needs: "`pip install componentize-py==0.25.1` (Python 3.10+)",
        http_wit: true,
    },
    Template {
        name: "http-js",
        summary: "HTTP component in JavaScript (ComponentizeJS)",
        needs: "Node.js 20+ with npm",
        http_wit: true,
    },
    Template {
        name: "http-c",
        summary: "HTTP component in C (clang, wasi-libc, wit-bindgen)",
        needs: "clang with wasi-libc, wit-bindgen and wasm-component-ld (see its README)",
        http_wit: true,
    },
    Template {
        name: "command-rust",
        summary: "command-line program in Rust, for `skiff run`",
        needs: "Rust with `rustup target add wasm32-wasip2`",
        http_wit: false,
    },
    Template {
        name: "job-rust",
        summary: "scheduled job in Rust: a command run on a cron schedule",
        needs: "Rust with `rustup target add wasm32-wasip2`",
        http_wit: false,
    },
];

#[derive(Args)]
pub struct NewArgs {
    /// List the templates and exit.
    #[arg(long, exclusive = true)]
    list: bool,
    /// The template (see --list).
    #[arg(required_unless_present = "list")]
    template: Option<String>,
    /// The app's name: lowercase letters, digits and `-`, starting with a letter.
    #[arg(required_unless_present = "list")]
    name: Option<String>,
    /// Where to create the app [default: a new folder named NAME].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn new(args: NewArgs) -> Result<ExitCode> {
    let (Some(template), Some(name)) = (args.template, args.name) else {
        print_list();
        return Ok(ExitCode::SUCCESS);
    };
    let Some(chosen) = ALL.iter().find(|t| t.name == template) else {
        let names: Vec<&str> = ALL.iter().map(|t| t.name).collect();
        bail!(
            "no template `{template}`; there are: {} (`skiff new --list` says what each is)",
            names.join(", ")
        );
    };
    if let Some(why) = skiff_manifest::name_problem(&name) {
        bail!(
            "the app name `{name}` {why}: use lowercase letters, digits and `-`, starting with a \
             letter, e.g. `{}`",
            skiff_manifest::suggested_name(&name)
        );
    }
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&name));
    create(chosen, &name, &dir)?;
    let shown = dir.display();
    println!("Created the {} app `{name}` in {shown}/", chosen.name);
    println!("Needs: {}", chosen.needs);
    println!("Next:");
    println!("  cd {shown}");
    println!("  skiff build");
    if chosen.name == "command-rust" {
        println!("  skiff run target/wasm32-wasip2/release/{name}.wasm");
    } else {
        println!("  skiff up --watch");
    }
    Ok(ExitCode::SUCCESS)
}

fn print_list() {
    let width = ALL.iter().map(|t| t.name.len()).max().unwrap_or(0);
    for template in ALL {
        println!(
            "{:width$}  {}; needs {}",
            template.name, template.summary, template.needs
        );
    }
}

/// Writes the template's files under `dir`, which must not exist or be empty. Files are
/// created new (never over an existing one), so a race with another writer fails rather than
/// clobbers.
fn create(template: &Template, name: &str, dir: &Path) -> Result<()> {
    if let Ok(mut entries) = std::fs::read_dir(dir)
        && entries.next().is_some()
    {
        bail!(
            "`{}` exists and is not empty: give a new folder with --dir, or another name",
            dir.display()
        );
    }
    let files = TEMPLATES.get_dir(template.name).with_context(|| {
        format!(
            "the template `{}` is missing from this build",
            template.name
        )
    })?;
    write_files(files, Path::new(template.name), dir, name)?;
    if template.http_wit {
        let wit = TEMPLATES
            .get_dir(HTTP_WIT)
            .context("the WASI HTTP interfaces are missing from this build")?;
        write_files(wit, Path::new(HTTP_WIT), &dir.join("wit"), name)?;
    }
    Ok(())
}

/// Copies every file under `from` (whose paths start with `prefix`) to `to`, filled in.
fn write_files(from: &Dir, prefix: &Path, to: &Path, name: &str) -> Result<()> {
    for entry in from.entries() {
        if let Some(sub) = entry.as_dir() {
            write_files(sub, prefix, to, name)?;
            continue;
        }
        let Some(file) = entry.as_file() else {
            continue;
        };
        let relative = file.path().strip_prefix(prefix).unwrap_or(file.path());
        let target = to.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create `{}`", parent.display()))?;
        }
        let text = String::from_utf8_lossy(file.contents())
            .replace("{{app-name}}", name)
            .replace("{{app_name}}", &name.replace('-', "_"));
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .with_context(|| format!("cannot create `{}`", target.display()))?;
        std::io::Write::write_all(&mut out, text.as_bytes())
            .with_context(|| format!("cannot write `{}`", target.display()))?;
    }
    Ok(())
}
