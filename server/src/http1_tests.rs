//! The listener's limits over real sockets: one address holding slow connections cannot
//! starve another, and a connection that never finishes its headers, or sits idle after an
//! answer, is closed at the deadline.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::*;

/// A plain-HTTP listener on 127.0.0.1 answering every request `200 ok`.
async fn listener(limits: ListenerLimits) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let respond: Respond = Arc::new(|_: &Method, _: &str| plain(StatusCode::OK, "ok"));
    spawn(listener, None, "test", limits, respond);
    address
}

fn limits(per_address: usize, header_read_timeout: Duration) -> ListenerLimits {
    ListenerLimits {
        section: "oidc",
        max_connections_per_address: per_address,
        header_read_timeout,
    }
}

/// A connection to `to` from the source address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the peer closes (or `limit` passes: `None`).
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match tokio::time::timeout(limit, s.read_to_end(&mut out)).await {
        Ok(_) => Some(out),
        Err(_) => None,
    }
}

#[tokio::test]
async fn one_address_holding_slow_connections_does_not_starve_another() {
    let address = listener(limits(4, Duration::from_secs(60))).await;
    // More slow connections from 127.0.0.1 than the whole listener holds, each a request
    // line and no end of headers.
    let mut slow = Vec::new();
    for _ in 0..MAX_CONNECTIONS + 8 {
        let mut s = connect_from("127.0.0.1", address).await;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        slow.push(s);
    }
    // Another address still gets its answer.
    let mut other = connect_from("127.0.0.2", address).await;
    other
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut other, Duration::from_secs(10))
        .await
        .expect("an answer, not a hang");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    // The slow address kept its share; the rest of its connections were closed unanswered.
    let mut closed = 0;
    for s in slow.iter_mut().skip(4) {
        let got = read_to_close(s, Duration::from_secs(10)).await;
        assert_eq!(got.as_deref(), Some(&b""[..]), "closed unanswered");
        closed += 1;
    }
    assert_eq!(closed, MAX_CONNECTIONS + 4);
    let mut held = slow.swap_remove(0);
    assert_eq!(
        read_to_close(&mut held, Duration::from_millis(300)).await,
        None,
        "one of the first four is still open"
    );
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_headers_is_closed_at_the_deadline() {
    let deadline = Duration::from_millis(500);
    let address = listener(limits(16, deadline)).await;
    let mut s = connect_from("127.0.0.1", address).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let got = read_to_close(&mut s, Duration::from_secs(10))
        .await
        .expect("closed within the safety net, not held open");
    assert!(
        started.elapsed() >= deadline / 2,
        "closed before the deadline"
    );
    // hyper may answer 408 before closing; never a 200.
    assert!(!String::from_utf8_lossy(&got).contains("200"), "{got:?}");

    // A kept-alive connection left idle after its answer is closed too.
    let mut s = connect_from("127.0.0.1", address).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = read_to_close(&mut s, Duration::from_secs(10))
        .await
        .expect("an idle kept-alive connection is closed, not held open");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
}

#[test]
fn an_ipv6_host_counts_as_its_64() {
    let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
    let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    assert_eq!(address_key(a), address_key(b));
    assert_ne!(address_key(a), address_key(c));
    let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
    assert_eq!(address_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
}
