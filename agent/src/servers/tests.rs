use std::net::ToSocketAddrs;
use std::sync::Mutex;

use super::*;

fn servers(list: &[&str]) -> Servers {
    let parsed: Vec<ServerAddress> = list.iter().map(|a| a.parse().unwrap()).collect();
    Servers::new(&parsed)
}

fn refused(server: &Server) -> ConnectError {
    ConnectError::Resolve {
        address: server.to_string(),
        source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
    }
}

/// Connects with a dial that fails for the ports in `dead`; returns the port reached (or
/// the error) and the ports dialled, in order.
async fn connect(s: &Servers, dead: &[u16]) -> (Result<u16, ConnectError>, Vec<u16>) {
    let dialled = Mutex::new(Vec::new());
    let r = s
        .connect(|server| {
            dialled.lock().unwrap().push(server.socket.port());
            let ok = !dead.contains(&server.socket.port());
            async move {
                if ok {
                    Ok(())
                } else {
                    Err(refused(&server))
                }
            }
        })
        .await
        .map(|((), server)| server.socket.port());
    (r, dialled.into_inner().unwrap())
}

#[tokio::test]
async fn a_dead_server_is_passed_over_and_the_agent_stays_on_the_one_that_answered() {
    let s = servers(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
    // Server 1 is down: the same attempt goes on to 2.
    let (r, dialled) = connect(&s, &[1]).await;
    assert_eq!(r.unwrap(), 2);
    assert_eq!(dialled, [1, 2]);
    // The agent stays on 2 while it answers.
    let (r, dialled) = connect(&s, &[1]).await;
    assert_eq!((r.unwrap(), dialled), (2, vec![2]));
    // A session with 2 failed after connecting: the next attempt starts at 3.
    let two = s.round().servers[1].clone();
    s.failed(&two);
    let (r, dialled) = connect(&s, &[1]).await;
    assert_eq!((r.unwrap(), dialled), (3, vec![3]));
    // After the last one, round again from the first (still down), then 2.
    let three = s.round().servers[2].clone();
    s.failed(&three);
    let (r, dialled) = connect(&s, &[1]).await;
    assert_eq!((r.unwrap(), dialled), (2, vec![1, 2]));
}

#[tokio::test]
async fn when_no_server_answers_each_one_is_named_and_the_next_attempt_tries_all_again() {
    let s = servers(&["127.0.0.1:1", "127.0.0.1:2"]);
    let (r, dialled) = connect(&s, &[1, 2]).await;
    assert_eq!(dialled, [1, 2]);
    let e = r.unwrap_err();
    assert!(matches!(&e, ConnectError::NoServerAnswered { failures } if failures.len() == 2));
    let text = e.to_string();
    assert!(
        text.starts_with("no server of the trust domain answered")
            && text.contains("127.0.0.1:1")
            && text.contains("127.0.0.1:2"),
        "{text}"
    );
    let (r, dialled) = connect(&s, &[1]).await;
    assert_eq!((r.unwrap(), dialled), (2, vec![1, 2]));

    // One server: its own error, as before several servers existed.
    let one = servers(&["127.0.0.1:7"]);
    let (r, _) = connect(&one, &[7]).await;
    assert!(
        matches!(r.unwrap_err(), ConnectError::Resolve { address, .. } if address == "127.0.0.1:7")
    );
}

#[tokio::test]
async fn every_address_a_name_resolves_to_is_a_server_and_each_counts_once() {
    let s = servers(&["localhost:8081", "127.0.0.1:8081", "127.0.0.1:8082"]);
    let resolved = s.resolve().await.unwrap();
    let mut want: Vec<SocketAddr> = Vec::new();
    for a in ("localhost", 8081).to_socket_addrs().unwrap() {
        if !want.contains(&a) {
            want.push(a);
        }
    }
    for extra in ["127.0.0.1:8081", "127.0.0.1:8082"] {
        let a: SocketAddr = extra.parse().unwrap();
        if !want.contains(&a) {
            want.push(a);
        }
    }
    assert_eq!(resolved.iter().map(|s| s.socket).collect::<Vec<_>>(), want);
    // The name stays what the config says (logs name it), the dialled address beside it.
    assert_eq!(&*resolved[0].configured, "localhost:8081");
    assert!(resolved[0].to_string().starts_with("localhost:8081 ("));
    assert_eq!(resolved.last().unwrap().to_string(), "127.0.0.1:8082");
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_named() {
    let e = servers(&["no-such-server.invalid:8081"])
        .resolve()
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ConnectError::Resolve { address, .. } if address == "no-such-server.invalid:8081"),
        "{e}"
    );
    // Beside one that resolves, it is left out.
    let s = servers(&["no-such-server.invalid:8081", "127.0.0.1:8081"]);
    let resolved = s.resolve().await.unwrap();
    assert_eq!(resolved.len(), 1);
    assert!(matches!(
        Servers::new(&[]).resolve().await.unwrap_err(),
        ConnectError::NoServerAddress
    ));
}
