//! Raw client connections for the tests of a server's connection limits:
//! from a chosen loopback address, and whether the server closed them.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `server` from `local` (any 127.x.y.z works on Linux).
pub async fn connect_from(local: IpAddr, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(local, 0)).unwrap();
    socket.connect(server).await.unwrap()
}

/// Whether the server has closed `stream` (EOF or reset), waiting at most
/// `patience`.
pub async fn closed_by_server(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    patience: Duration,
) -> bool {
    let mut buffer = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // A 408 or similar before the close: keep reading to the end.
            Ok(Ok(_)) => continue,
        }
    }
}

/// An HTTP client whose connections come from `local`.
pub fn client_from(local: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(local)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}
