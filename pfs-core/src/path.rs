//! Gramine's lexical path normalisation (spec §11), which decides the embedded path.
//!
//! `gramine-sgx-pf-crypt -o OUT` embeds `normalize(OUT)`, and the LibOS checks a file under
//! an encrypted mount against `normalize(uri path) / relative name`. No symlinks are
//! resolved and relative paths stay relative.

/// Normalises a path as Gramine does: collapses `//`, drops `.`, resolves `..` against the
/// previous component (kept at the start of a relative path, dropped at the start of an
/// absolute one), keeps a leading `/`, and removes any trailing `/`.
///
/// ```
/// use pfs_core::path::normalize;
/// assert_eq!(normalize(b"./enc_files//x/../input.txt"), b"enc_files/input.txt");
/// assert_eq!(normalize(b"/../a/"), b"/a");
/// assert_eq!(normalize(b"../a/./b"), b"../a/b");
/// ```
pub fn normalize(path: &[u8]) -> Vec<u8> {
    let absolute = path.first() == Some(&b'/');
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => match parts.last() {
                Some(last) if *last != b".." => {
                    parts.pop();
                }
                _ if absolute => {}
                _ => parts.push(part),
            },
            _ => parts.push(part),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    if absolute {
        out.push(b'/');
    }
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(part);
    }
    if out.is_empty() {
        out.push(b'.');
    }
    out
}

/// The embedded path of the file at relative path `rel` inside a mount or output tree
/// rooted at `base` (as the user typed it): `normalize(base / rel)`.
pub fn join_normalized(base: &[u8], rel: &[u8]) -> Vec<u8> {
    let mut joined = base.to_vec();
    joined.push(b'/');
    joined.extend_from_slice(rel);
    normalize(&joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_of_the_manifest_spec() {
        assert_eq!(normalize(b"./enc_files//x/../input.txt"), b"enc_files/input.txt");
        assert_eq!(normalize(b"a/./b/"), b"a/b");
        assert_eq!(normalize(b"../a"), b"../a");
        assert_eq!(normalize(b"/../a"), b"/a");
        assert_eq!(normalize(b"../../a/.."), b"../..");
        assert_eq!(normalize(b"/"), b"/");
        assert_eq!(normalize(b"a/.."), b".");
        assert_eq!(normalize(b"//x//y//"), b"/x/y");
    }

    #[test]
    fn join_binds_to_the_mount_uri() {
        assert_eq!(join_normalized(b"enc/", b"sub/x.bin"), b"enc/sub/x.bin");
        assert_eq!(join_normalized(b"/data/./enc", b"x"), b"/data/enc/x");
    }
}
