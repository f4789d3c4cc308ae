//! Writes the generated policies and requests to a directory, for
//! `veto policy bench` and for people who want to read them:
//! `policy-N.yaml`, `requests-N.yaml`, `policy-N.cedar`, `veto.rego` and
//! `data-N.json` for every size.

use std::path::PathBuf;
use std::process::ExitCode;
use veto_bench_policy::{SIZES, Shape, cedar, rego, veto};

fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1).map(PathBuf::from) else {
        eprintln!("usage: gen DIR");
        return ExitCode::from(2);
    };
    let write = |name: String, text: String| {
        std::fs::write(dir.join(&name), text)
            .map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    let run = || -> Result<(), String> {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        write("veto.rego".into(), rego::POLICY.into())?;
        for n in SIZES {
            let shape = Shape::generate(n);
            write(format!("policy-{n}.yaml"), veto::yaml(&shape))?;
            write(
                format!("requests-{n}.yaml"),
                veto::requests_yaml(&shape.requests()),
            )?;
            write(format!("policy-{n}.cedar"), cedar::policies(&shape))?;
            write(format!("data-{n}.json"), rego::data(&shape).to_string())?;
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen: {e}");
            ExitCode::FAILURE
        }
    }
}
