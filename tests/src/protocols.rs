//! Protocol conversations for the classification tests (`tests/integration/protocols.rs`): the
//! first payloads real clients and servers sent, as recorded for the classifier's host tests
//! (`tracer-common/tests/classify.rs`, which says how and with which programs; the hex here is
//! copied from its fixtures of the same names), played by the test's own client and server on
//! `std::net`, so they run in the VMs too, where none of those programs is installed.
//!
//! Each fixture keeps a payload's first bytes (at most 64) and its real length; a payload is
//! played at its real length, zero-padded, because some rules compare a message's own length
//! with the payload's (the classifier reads only the first 48 bytes).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    thread,
};

/// Which end sends a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// One payload: who sends it, its first bytes in hex, its length.
#[derive(Clone, Copy, Debug)]
pub struct Payload {
    pub from: Side,
    pub hex: &'static str,
    pub total: usize,
}

impl Payload {
    /// The bytes to send: the recorded ones, zero-padded to `total`.
    pub fn bytes(&self) -> Vec<u8> {
        assert!(self.hex.len().is_multiple_of(2), "odd hex");
        let mut bytes: Vec<u8> = (0..self.hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&self.hex[i..i + 2], 16).expect("hex"))
            .collect();
        assert!(
            bytes.len() <= self.total,
            "more bytes than the payload's length"
        );
        bytes.resize(self.total, 0);
        bytes
    }
}

const fn client(hex: &'static str, total: usize) -> Payload {
    Payload {
        from: Side::Client,
        hex,
        total,
    }
}

const fn server(hex: &'static str, total: usize) -> Payload {
    Payload {
        from: Side::Server,
        hex,
        total,
    }
}

/// A conversation and the stack (api, application, encryption: `tracer_common::classify`
/// codes) both ends of its connection must carry.
#[derive(Clone, Copy, Debug)]
pub struct Conversation {
    pub name: &'static str,
    pub payloads: &'static [Payload],
    pub stack: [u8; 3],
}

/// Every protocol the classifier knows, from its fixtures.
pub const CONVERSATIONS: &[Conversation] = &[
    Conversation {
        name: "http",
        payloads: &[
            // HTTP_GET_CURL, HTTP_200_NGINX
            client(
                concat!(
                    "474554202f696e6465782e68746d6c20485454502f312e310d0a486f73743a20",
                    "3132372e302e302e313a31393030310d0a557365722d4167656e743a20637572",
                ),
                89,
            ),
            server(
                concat!(
                    "485454502f312e3120323030204f4b0d0a5365727665723a206e67696e782f31",
                    "2e32322e310d0a446174653a2053756e2c203036204465632032303236203139",
                ),
                152,
            ),
        ],
        stack: [0, 1, 0],
    },
    Conversation {
        name: "http2",
        payloads: &[
            // H2C_PREFACE_CURL, H2C_SETTINGS_NGINX
            client(
                concat!(
                    "505249202a20485454502f322e300d0a0d0a534d0d0a0d0a0000120400000000",
                    "0000030000006400040200000000020000000000000408000000000001ff0001",
                ),
                104,
            ),
            server(
                concat!(
                    "000012040000000000000300000080000400010000000500ffffff0000040800",
                    "000000007fff0000000000040100000000000030010400000001887689aa6355",
                ),
                106,
            ),
        ],
        stack: [0, 2, 0],
    },
    Conversation {
        name: "grpc",
        payloads: &[
            // H2C_PREFACE_GRPCIO, H2C_SETTINGS_GRPCIO
            client(
                concat!(
                    "505249202a20485454502f322e300d0a0d0a534d0d0a0d0a0000240400000000",
                    "000002000000000003000000000004003fffff0005003fffff000600002000fe",
                ),
                82,
            ),
            server(
                concat!(
                    "0000180400000000000004003fffff0005003fffff000600002000fe03000000",
                    "01000004080000000000003f0000000000040100000000",
                ),
                55,
            ),
            // Not recorded: a request HEADERS frame of indexed fields (:method POST, :scheme
            // http, :path /, :scheme https), in place of grpcio's request, which only its
            // server's response answers.
            client("00000401040000000183868487", 13),
            // GRPC_RESPONSE_HEADERS_GRPCIO
            server(
                concat!(
                    "00004e01040000000188400c636f6e74656e742d74797065106170706c696361",
                    "74696f6e2f677270634014677270632d6163636570742d656e636f64696e6717",
                ),
                143,
            ),
        ],
        stack: [1, 2, 0],
    },
    Conversation {
        name: "tls",
        payloads: &[
            // TLS_CLIENT_HELLO_CURL, TLS_SERVER_HELLO_NGINX
            client(
                concat!(
                    "1603010200010001fc03035573c82eb6c5fe9cc5cfd7a5ca1aac58eb4a53d145",
                    "35846baefae65389372fdb2060c4eea997e6d1614aed9881b1ee97a45c359ee6",
                ),
                517,
            ),
            server(
                concat!(
                    "160303006c0200006803030975d0a4c55f67218d78bc9ef306c843932ea234e2",
                    "4bdd500605c52e53150712201ab02d9c6a555bd10de73c698026286c68aa551c",
                ),
                1223,
            ),
        ],
        stack: [0, 0, 1],
    },
    Conversation {
        name: "postgres",
        payloads: &[
            // PG_STARTUP_PSQL, PG_AUTH_OK_POSTGRES
            client(
                concat!(
                    "0000003f000300007573657200706f7374677265730064617461626173650070",
                    "6f737467726573006170706c69636174696f6e5f6e616d65007073716c0000",
                ),
                63,
            ),
            server(
                concat!(
                    "520000000800000000530000001a6170706c69636174696f6e5f6e616d650070",
                    "73716c005300000019636c69656e745f656e636f64696e670055544638005300",
                ),
                414,
            ),
        ],
        stack: [0, 5, 0],
    },
    Conversation {
        name: "mysql",
        payloads: &[
            // MYSQL_GREETING_MARIADB (the server speaks first), MYSQL_HANDSHAKE_RESPONSE_MARIADB
            server(
                concat!(
                    "640000000a352e352e352d31302e31312e31392d4d6172696144422d302b6465",
                    "6231327531000500000051444053616e266d00fef72d0200ff81150000000000",
                ),
                104,
            ),
            client(
                concat!(
                    "ba00000184a2bf00000010002100000000000000000000000000000000000000",
                    "1d000000726f6f7400006d7973716c5f6e61746976655f70617373776f726400",
                ),
                190,
            ),
        ],
        stack: [0, 8, 0],
    },
    Conversation {
        name: "redis",
        payloads: &[
            // REDIS_PING_CLI, REDIS_PONG_SERVER
            client("2a310d0a24340d0a70696e670d0a", 14),
            server("2b504f4e470d0a", 7),
        ],
        stack: [0, 7, 0],
    },
    Conversation {
        name: "kafka",
        payloads: &[
            // KAFKA_API_VERSIONS_V3_KCAT
            client(
                concat!(
                    "000000240012000300000001000772646b61666b61000b6c696272646b61666b",
                    "6106322e302e3200",
                ),
                40,
            ),
            // Not recorded (responses are not classified): size 10, correlation id 1, error 0,
            // no api keys.
            server("0000000a000000010000000000000000", 16),
        ],
        stack: [0, 3, 0],
    },
    Conversation {
        name: "amqp",
        payloads: &[
            // AMQP_HEADER_AMQP_TOOLS, AMQP_CONNECTION_START_RABBITMQ
            client("414d515000000901", 8),
            server(
                concat!(
                    "010000000001ef000a000a0009000001ca0c6361706162696c69746965734600",
                    "0000c7127075626c69736865725f636f6e6669726d7374011a65786368616e67",
                ),
                503,
            ),
        ],
        stack: [0, 6, 0],
    },
    Conversation {
        name: "mongo",
        payloads: &[
            // MONGO_OP_MSG_PING_PYMONGO, MONGO_OP_MSG_REPLY_SPEC
            client(
                concat!(
                    "88000000a33c728300000000dd0700000000000000730000001070696e670001",
                    "000000036c736964001e0000000569640010000000046eff9ca652f34dca8d23",
                ),
                136,
            ),
            server(
                concat!(
                    "26000000e9030000a33c7283dd070000000000000011000000016f6b00000000",
                    "000000f03f00",
                ),
                38,
            ),
        ],
        stack: [0, 4, 0],
    },
];

/// Plays `payloads` over `stream` as `side`: sends its own, reads the other side's whole.
pub fn play(stream: &mut TcpStream, side: Side, payloads: &[Payload]) {
    for payload in payloads {
        let bytes = payload.bytes();
        if payload.from == side {
            stream.write_all(&bytes).expect("send a payload");
        } else {
            let mut got = vec![0u8; bytes.len()];
            stream.read_exact(&mut got).expect("read a payload");
            assert_eq!(got, bytes, "payload received as sent");
        }
    }
}

/// A connected pair on `listener`: the client's stream and the server's accepted one, after
/// both played `payloads` (one `send` per payload, `TCP_NODELAY`, each read whole before the
/// next is sent, so each payload starts a segment, as the recorded programs' did).
pub fn converse(listener: &TcpListener, payloads: &'static [Payload]) -> (TcpStream, TcpStream) {
    let addr = listener.local_addr().expect("listener address");
    let listener = listener.try_clone().expect("clone the listener");
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        play(&mut stream, Side::Server, payloads);
        stream
    });
    let mut client = TcpStream::connect(addr).expect("connect");
    client.set_nodelay(true).expect("nodelay");
    play(&mut client, Side::Client, payloads);
    let server = server.join().expect("server thread");
    (client, server)
}

/// Bytes of a fixed xorshift64 sequence: data no classifier rule takes, the same every run.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// An echo over a fresh connection to `listener`: the client sends `data` in chunks of at most
/// `chunk` bytes and reads each back before the next. Returns the two streams, open.
pub fn echo(listener: &TcpListener, data: Vec<u8>, chunk: usize) -> (TcpStream, TcpStream) {
    let addr = listener.local_addr().expect("listener address");
    let listener = listener.try_clone().expect("clone the listener");
    let len = data.len();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 65536];
        let mut echoed = 0;
        while echoed < len {
            let n = stream.read(&mut buf).expect("server read");
            assert!(n > 0, "client closed early");
            stream.write_all(&buf[..n]).expect("server write");
            echoed += n;
        }
        stream
    });
    let mut client = TcpStream::connect(addr).expect("connect");
    for piece in data.chunks(chunk) {
        client.write_all(piece).expect("client write");
        let mut back = vec![0u8; piece.len()];
        client.read_exact(&mut back).expect("client read");
        assert_eq!(back, piece, "echoed");
    }
    let server = server.join().expect("server thread");
    (client, server)
}

/// The local address of `stream` and its peer's.
pub fn ends(stream: &TcpStream) -> (SocketAddr, SocketAddr) {
    (
        stream.local_addr().expect("local address"),
        stream.peer_addr().expect("peer address"),
    )
}
