//! The worked example of docs/audit.md, checked: if this test changes, the
//! documentation must change with it.

use serde_json::json;
use sha2::{Digest, Sha256};

use super::KEY;
use crate::audit::hash::framed_input;
use crate::audit::{
    audit_id, decode_key, verify_header, verify_records, AuditPolicy, AuditStamp, Chain,
    RecordFields,
};
use crate::canonical::hex;
use crate::request::RequestInfo;

const CONFIG: &str = r#"{
  "key_id": "2024-06",
  "commands": [
    {"name": "refund", "paths": ["/v1/orders/*"], "methods": ["POST"],
     "parts": ["method", "path", "query", {"json_pointer": "/action"}, {"json_pointer": "/amount"}]}
  ]
}"#;
const KEY_B64: &str = "bWVzaGd1YXJkLWV4YW1wbGUta2V5LTAxMjM0NTY3ODk=";
const TARGET: &str = "/v1/jobs/../orders//42/?tag=a+b&dry_run=true&tag=A";
const BODY: &str = r#"{"amount": 12.5, "action": "refund", "note": "customer called"}"#;
const PREIMAGE: &str = "meshguard-command-v1\n\
method:4:POST\n\
path:14:/v1/orders/42/\n\
query:26:dry_run=true&tag=a+b&tag=A\n\
json:/action:8:\"refund\"\n\
json:/amount:4:12.5\n";
const CMD: &str = "977b4d2efe3212e027b504092bfb44511327c088e91a62b70d72fbcb913580f2";
const HEADER: &str = "v=1;kid=2024-06;id=web-7f9c.0-15;ts=1718000000123;\
peer=spiffe://cluster.local/ns/shop/sa/frontend;cfg=-;\
cmd=977b4d2efe3212e027b504092bfb44511327c088e91a62b70d72fbcb913580f2;\
sig=jaK8G0i_aDD5X1IDkO8HSAaVe6pCRmPTDJ6fnBQKEOQ";
const MAC_INPUT: &str = "meshguard-audit-v1\n1\n2024-06\nweb-7f9c.0-15\n1718000000123\n\
spiffe://cluster.local/ns/shop/sa/frontend\n-\n\
977b4d2efe3212e027b504092bfb44511327c088e91a62b70d72fbcb913580f2";
const RECORD_LINE: &str = r#"meshguard-audit-record: {"chain":"web-7f9c.0","command":"refund","command_sha256":"977b4d2efe3212e027b504092bfb44511327c088e91a62b70d72fbcb913580f2","config_fingerprint":null,"decisions":{"identity":"allowed"},"duration_ms":12,"host":"shop.example.com","id":"web-7f9c.0-15","kid":"2024-06","mac":"rwbaPhTrwgQp-9lem6yhpr84n6rov9PnF-IwW18Gz_s","method":"POST","path":"/v1/orders/42/","peer":"spiffe://cluster.local/ns/shop/sa/frontend","prev":"0000000000000000000000000000000000000000000000000000000000000000","seq":0,"status":200,"ts_ms":1718000000123,"v":1}"#;
const NEXT_PREV: &str = "d5c8ec2205392667e3fd2261597a88cce1da060acea08a776c56fdf21899872d";

#[test]
fn the_documented_worked_example_reproduces() {
    assert_eq!(decode_key(KEY_B64).unwrap(), KEY);
    let p = AuditPolicy::from_json(CONFIG.as_bytes()).unwrap();
    let request = RequestInfo {
        path: TARGET,
        method: "post",
        host: "shop.example.com",
    };
    let c = p.command_for(&request);
    assert_eq!(p.command_name(c), "refund");
    let want = framed_input(&[
        ("method", b"POST"),
        ("path", b"/v1/orders/42/"),
        ("query", b"dry_run=true&tag=a+b&tag=A"),
        ("json:/action", b"\"refund\""),
        ("json:/amount", b"12.5"),
    ]);
    assert_eq!(String::from_utf8(want).unwrap(), PREIMAGE);
    let digest: [u8; 32] = Sha256::digest(PREIMAGE.as_bytes()).into();
    let cmd = p.command_hash(c, &request, BODY.as_bytes()).unwrap();
    assert_eq!(cmd, digest);
    assert_eq!(hex(&cmd), CMD);

    let stamp = AuditStamp {
        key_id: p.key_id().into(),
        id: audit_id("web-7f9c.0", 15),
        ts_ms: 1_718_000_000_123,
        peer: Some("spiffe://cluster.local/ns/shop/sa/frontend".into()),
        config_fingerprint: None,
        command_sha256: cmd,
    };
    let header = stamp.sign(KEY).unwrap();
    assert_eq!(header, HEADER);
    assert_eq!(stamp.mac_input(), MAC_INPUT);
    assert_eq!(verify_header(HEADER, KEY), Ok(stamp));

    let mut chain = Chain::new("web-7f9c.0");
    let mut fields = RecordFields::new(
        audit_id("web-7f9c.0", 15),
        1_718_000_000_123,
        &request,
        "refund",
        cmd,
    );
    fields.peer = Some("spiffe://cluster.local/ns/shop/sa/frontend".into());
    fields.status = Some(200);
    fields.duration_ms = Some(12);
    fields.decisions.insert("identity".into(), json!("allowed"));
    let record = chain.seal(fields, KEY, "2024-06").unwrap();
    assert_eq!(chain.prev_hash(), NEXT_PREV);
    assert_eq!(record.to_line(), RECORD_LINE);
    let keys = std::collections::BTreeMap::from([("2024-06".to_string(), KEY.to_vec())]);
    assert!(verify_records(RECORD_LINE, &keys).is_ok());
}
