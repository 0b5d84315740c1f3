//! Outputs never overwrite inputs: every command that writes checks its output paths
//! against its input paths (canonicalised, so `./a`, `a/../a` and symlinks compare equal)
//! before doing any work.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// An input of a command: the flag that named it and its path. Inputs that are not local
/// paths (Hub ids) are left out by the caller or simply do not exist here.
pub struct Input<'a> {
    pub flag: &'a str,
    pub path: &'a Path,
}

impl<'a> Input<'a> {
    pub fn new(flag: &'a str, path: &'a Path) -> Self {
        Self { flag, path }
    }
}

/// The absolute form of `p` with symlinks resolved as far as the path exists (an output
/// usually does not exist yet: its nearest existing ancestor is resolved, the rest kept).
pub fn canonical(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut tail: Vec<std::ffi::OsString> = Vec::new();
    let mut head = abs.as_path();
    loop {
        if let Ok(c) = head.canonicalize() {
            let mut out = c;
            for part in tail.iter().rev() {
                out.push(part);
            }
            return normalise(&out);
        }
        match (head.parent(), head.file_name()) {
            (Some(parent), Some(name)) => {
                tail.push(name.to_os_string());
                head = parent;
            }
            _ => return normalise(&abs),
        }
    }
}

/// `a/./b/../c` → `a/c` for the part of a path that does not exist yet.
fn normalise(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

/// An output file (`flag` `out`) must not be any input, nor an image inside an input
/// folder (where it would replace or join the images read).
pub fn check_output_file(flag: &str, out: &Path, inputs: &[Input]) -> Result<()> {
    let o = canonical(out);
    for i in inputs.iter().filter(|i| i.path.exists()) {
        let c = canonical(i.path);
        if o == c {
            return Err(Error::input(format!(
                "{flag} {} is the input given as {} {}: it would be overwritten; choose another {flag}",
                out.display(),
                i.flag,
                i.path.display()
            )));
        }
        if c.is_dir() && o.starts_with(&c) && is_image(&o) {
            return Err(Error::input(format!(
                "{flag} {} lies inside the input folder {} {} and is an image: it would replace or join the images read; choose another {flag}",
                out.display(),
                i.flag,
                i.path.display()
            )));
        }
    }
    Ok(())
}

/// An output folder (`flag` `out`) into which a command writes files with the extensions
/// `writes`: it must not be an input file, nor an input folder or lie inside one, nor
/// directly hold an input file with one of those extensions.
pub fn check_output_dir(flag: &str, out: &Path, writes: &[&str], inputs: &[Input]) -> Result<()> {
    let o = canonical(out);
    for i in inputs.iter().filter(|i| i.path.exists()) {
        let c = canonical(i.path);
        let named = format!("{} {}", i.flag, i.path.display());
        if c.is_dir() && o.starts_with(&c) {
            return Err(Error::input(format!(
                "{flag} {} {} the input folder {named}: outputs would be written among the inputs; choose another {flag}",
                out.display(),
                if o == c { "is" } else { "lies inside" }
            )));
        }
        if o == c {
            return Err(Error::input(format!(
                "{flag} {} is the input file {named}; expected a folder for the outputs",
                out.display()
            )));
        }
        let ext = c
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .unwrap_or_default();
        if c.parent() == Some(o.as_path()) && writes.contains(&ext.as_str()) {
            return Err(Error::input(format!(
                "{flag} {} holds the input {named}, and the .{} files written there could overwrite it; choose another {flag}",
                out.display(),
                writes.join("/.")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_equal_to_or_among_inputs_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let model = tmp.path().join("m.safetensors");
        std::fs::write(&model, b"x").unwrap();
        let imgs = tmp.path().join("imgs");
        std::fs::create_dir(&imgs).unwrap();
        let inputs = [Input::new("--model", &model), Input::new("--input", &imgs)];
        // The same file spelled another way.
        let other = tmp.path().join("imgs/../m.safetensors");
        let e = check_output_file("--out", &other, &inputs).unwrap_err();
        assert!(e.to_string().contains("--model"), "{e}");
        assert!(check_output_file("--out", &imgs.join("a.png"), &inputs).is_err());
        check_output_file("--out", &tmp.path().join("new/l.safetensors"), &inputs).unwrap();
        check_output_file("--out", &imgs.join("l.safetensors"), &inputs).unwrap();

        assert!(check_output_dir("--out", &imgs, &["csv"], &inputs).is_err());
        assert!(check_output_dir("--out", &imgs.join("sub"), &["csv"], &inputs).is_err());
        assert!(check_output_dir("--out", &model, &["csv"], &inputs).is_err());
        let e = check_output_dir("--out", tmp.path(), &["safetensors"], &inputs).unwrap_err();
        assert!(e.to_string().contains("could overwrite"), "{e}");
        check_output_dir("--out", tmp.path(), &["csv", "png"], &inputs).unwrap();
        check_output_dir("--out", &tmp.path().join("eval"), &["csv"], &inputs).unwrap();
    }
}
