use super::*;

const CONTAINER_JSON: &str = r#"{
  "Id": "9830f857ee41aebf19c4f1e2ec1a833ce090ecb02ddd464977276a811bee7be7",
  "Name": "c1",
  "ImageName": "localhost/ironroot-test:latest",
  "Image": "eb1f84844195c8a60e755eaa5a022fbddc8ba49d1ea8943a7dc31851915d88dd",
  "ImageDigest": "sha256:24bed11dd7ffc3e34196a322b292328cb8b387225c5ffb213152b22b0a482052",
  "Pod": "3889967858e95f3cd1cbc4e2656fe12f18862ec7436fb02d86e350ec7bb2230f",
  "State": {"Pid": 28843, "Running": true},
  "Config": {"Hostname": "x", "Labels": {"app": "web", "tier": "a:b=c"}}
}"#;

const POD_JSON: &str = r#"{
  "Id": "3889967858e95f3cd1cbc4e2656fe12f18862ec7436fb02d86e350ec7bb2230f",
  "Name": "p1",
  "Labels": {"team": "blue"},
  "NumContainers": 2
}"#;

fn strings(s: &[Selector]) -> Vec<String> {
    s.iter().map(ToString::to_string).collect()
}

#[test]
fn parses_the_libpod_answers_podman_gives() {
    let c: ContainerInspect = serde_json::from_str(CONTAINER_JSON).unwrap();
    assert_eq!(c.name, "c1");
    assert_eq!(c.image_name, "localhost/ironroot-test:latest");
    assert!(c.pod.starts_with("3889"));
    let p: PodInspect = serde_json::from_str(POD_JSON).unwrap();
    assert_eq!(p.name, "p1");
}

#[test]
fn container_and_pod_selectors() {
    let c: ContainerInspect = serde_json::from_str(CONTAINER_JSON).unwrap();
    let p: PodInspect = serde_json::from_str(POD_JSON).unwrap();
    let (sel, skipped) = selectors(&c, Some(&p));
    assert!(skipped.is_empty());
    assert_eq!(
        strings(&sel),
        [
            "podman:container_name:c1",
            "podman:image_id:eb1f84844195c8a60e755eaa5a022fbddc8ba49d1ea8943a7dc31851915d88dd",
            "podman:image_name:localhost/ironroot-test:latest",
            "podman:label:app:web",
            "podman:label:tier:a:b=c",
            "podman:pod_label:team:blue",
            "podman:pod_name:p1",
        ]
    );
}

#[test]
fn null_labels_and_empty_facts_give_no_selectors() {
    let c: ContainerInspect = serde_json::from_str(
        r#"{"Id":"x","Name":"solo","ImageName":"","Image":"","Pod":"","Config":{"Labels":null}}"#,
    )
    .unwrap();
    let (sel, skipped) = selectors(&c, None);
    assert_eq!(strings(&sel), ["podman:container_name:solo"]);
    assert!(skipped.is_empty());
    let bare: ContainerInspect = serde_json::from_str(r#"{"Id":"x"}"#).unwrap();
    assert!(selectors(&bare, None).0.is_empty());
    let pod: PodInspect = serde_json::from_str(r#"{"Name":"p","Labels":null}"#).unwrap();
    assert_eq!(
        strings(&selectors(&bare, Some(&pod)).0),
        ["podman:pod_name:p"]
    );
}

#[test]
fn empty_label_value_is_still_a_selector() {
    let c: ContainerInspect =
        serde_json::from_str(r#"{"Id":"x","Config":{"Labels":{"flag":""}}}"#).unwrap();
    assert_eq!(strings(&selectors(&c, None).0), ["podman:label:flag:"]);
}

#[test]
fn labels_that_cannot_be_selectors_are_left_out_and_reported() {
    let long = "v".repeat(3000);
    let json = format!(
        r#"{{"Id":"x","Name":"n","Config":{{"Labels":{{"ok":"1","ctl":"a\nb","long":"{long}"}}}}}}"#
    );
    let c: ContainerInspect = serde_json::from_str(&json).unwrap();
    let (sel, skipped) = selectors(&c, None);
    assert_eq!(
        strings(&sel),
        ["podman:container_name:n", "podman:label:ok:1"]
    );
    assert_eq!(skipped.len(), 2);
    assert!(skipped
        .iter()
        .any(|(what, why)| what == "label:ctl:a\\nb" && why.contains("control character")));
    assert!(skipped
        .iter()
        .any(|(what, why)| what.ends_with('…') && why.contains("bytes long")));
}
