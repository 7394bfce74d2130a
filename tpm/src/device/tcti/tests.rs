use super::*;

#[test]
fn accepts_the_usual_forms() {
    for t in [
        "swtpm:host=127.0.0.1,port=2321",
        "mssim:host=localhost,port=2321",
        "swtpm:port=4000",
        "tabrmd:",
    ] {
        assert!(parse(t).is_ok(), "{t}");
    }
}

#[test]
fn rejects_typos_naming_the_tcti() {
    for (t, words) in [
        (
            "swtpm:hots=127.0.0.1,port=2321",
            "unknown option \"hots=127.0.0.1\"",
        ),
        ("swtpm:host=127.0.0.1,port=99999", "is not a TCP port"),
        ("tpm:/dev/tpmrm0", "unknown TCTI"),
        ("device:/nonexistent/tpmrm9", "no such device"),
    ] {
        let e = parse(t).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(t), "{e}");
        assert!(e.contains(words), "{e}");
    }
}
