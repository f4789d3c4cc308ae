//! The loader must refuse bad input with diagnostics, never panic, and
//! every diagnostic must point inside the file.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match veto_policy::Policy::compile(text) {
        Ok(p) => {
            let _ = p.warnings();
        }
        Err(errs) => {
            assert!(!errs.is_empty());
            // Lines as YAML counts them: a lone `\r` ends one too.
            let breaks = text.replace("\r\n", "\n").matches(['\n', '\r']).count();
            let lines = breaks as u32 + 2;
            for d in errs {
                assert!(d.pos.line >= 1 && d.pos.line <= lines, "{d:?}");
            }
        }
    }
});
