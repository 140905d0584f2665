//! Host tests of the protocol classifier (`tracer_common::classify`), the same function the
//! kernel runs, on the first payload bytes real clients and servers sent.
//!
//! How the fixtures were recorded (once, by hand; the throwaway scripts are not kept): each
//! client talked to its real server on 127.0.0.1 through a small Python relay that logged, in
//! hex, what each `recv` returned for each direction; where no server is packaged (Kafka,
//! MongoDB) the client talked to a listener that only logged. On loopback each `send` of a
//! program is one skb, so these chunks are what the `cgroup_skb` program will see as a packet's
//! payload. Each fixture keeps the payload's first 64 bytes (the classifier reads
//! [`CLASSIFY_BYTES`] of them) and its real length.
//! Programs (Debian 12 packages unless said otherwise): curl 7.88.1, nginx 1.22.1 (nginx-light),
//! OpenSSL 3.0 (`openssl s_client`/`s_server`), psql and PostgreSQL 15.18, mariadb client and
//! server 10.11.19, redis-cli and redis-server 7.0.15, kcat 1.7.1, kafka-python 2.0.2, amqp-tools
//! 0.11.0 and RabbitMQ 3.10.8, pymongo 3.11.0, python3-grpcio 1.51.1, OpenSSH 9.2p1, iperf 3.12,
//! DiG 9.18. Not recorded: the two MongoDB replies (no mongod is packaged) and
//! GRPC_RESPONSE_HEADERS_HPACK (no grpc-go or grpc-java server); see their comments.

#![allow(
    clippy::indexing_slicing,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use tracer_common::classify::{
    CLASSIFY_BYTES, Classification, ClassifyBuf, PROTO_AMQP, PROTO_GRPC, PROTO_HTTP, PROTO_HTTP2,
    PROTO_KAFKA, PROTO_MONGO, PROTO_MYSQL, PROTO_POSTGRES, PROTO_REDIS, PROTO_TLS, PROTO_UNKNOWN,
    classify, classify_http2_headers,
};

/// Recorded payload: its first bytes in hex (at most 64) and its real length.
struct Fixture {
    hex: &'static str,
    total: usize,
}

impl Fixture {
    fn bytes(&self) -> Vec<u8> {
        assert!(self.hex.len().is_multiple_of(2), "odd hex");
        (0..self.hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&self.hex[i..i + 2], 16).expect("hex"))
            .collect()
    }
}

const UNKNOWN: Classification = Classification::UNKNOWN;
const HTTP: Classification = Classification::application(PROTO_HTTP);
const HTTP2: Classification = Classification::application(PROTO_HTTP2);
const GRPC: Classification = Classification {
    api: PROTO_GRPC,
    application: PROTO_HTTP2,
    encryption: PROTO_UNKNOWN,
};
const TLS: Classification = Classification {
    api: PROTO_UNKNOWN,
    application: PROTO_UNKNOWN,
    encryption: PROTO_TLS,
};
const POSTGRES: Classification = Classification::application(PROTO_POSTGRES);
const MYSQL: Classification = Classification::application(PROTO_MYSQL);
const REDIS: Classification = Classification::application(PROTO_REDIS);
const KAFKA: Classification = Classification::application(PROTO_KAFKA);
const AMQP: Classification = Classification::application(PROTO_AMQP);
const MONGO: Classification = Classification::application(PROTO_MONGO);

/// A fixture's name, bytes and expected classification.
type Case = (&'static str, Fixture, Classification);

/// One of the two entry points.
type Classifier = fn(&ClassifyBuf, usize) -> Classification;

/// `bytes` as the kernel would hand them to `f`: copied into the fixed buffer, the rest filled
/// with `fill`, and the payload's length.
fn run_with(f: Classifier, bytes: &[u8], total: usize, fill: u8) -> Classification {
    let mut buf = ClassifyBuf {
        bytes: [fill; CLASSIFY_BYTES],
    };
    let n = bytes.len().min(CLASSIFY_BYTES);
    buf.bytes[..n].copy_from_slice(&bytes[..n]);
    f(&buf, total)
}

fn run(f: Classifier, bytes: &[u8], total: usize) -> Classification {
    run_with(f, bytes, total, 0)
}

/// Whether `got` says nothing against `expected`: each layer equal or unknown (a cut gRPC
/// response is still HTTP/2).
fn compatible(got: Classification, expected: Classification) -> bool {
    let layer = |a: u8, b: u8| a == PROTO_UNKNOWN || a == b;
    layer(got.api, expected.api)
        && layer(got.application, expected.application)
        && layer(got.encryption, expected.encryption)
}

/// curl 7.88.1, `curl -s http://127.0.0.1:19001/index.html` (to nginx 1.22.1 through a relay that
/// logged the bytes): its request.
const HTTP_GET_CURL: Fixture = Fixture {
    hex: concat!(
        "474554202f696e6465782e68746d6c20485454502f312e310d0a486f73743a20",
        "3132372e302e302e313a31393030310d0a557365722d4167656e743a20637572",
    ),
    total: 89,
};

/// nginx 1.22.1 (`location / { return 200 "hello\n"; }`): its response to HTTP_GET_CURL.
const HTTP_200_NGINX: Fixture = Fixture {
    hex: concat!(
        "485454502f312e3120323030204f4b0d0a5365727665723a206e67696e782f31",
        "2e32322e310d0a446174653a2053756e2c203036204465632032303236203139",
    ),
    total: 152,
};

/// curl 7.88.1, `curl -s -d a=1 http://127.0.0.1:19023/form` (to nginx): its request.
const HTTP_POST_CURL: Fixture = Fixture {
    hex: concat!(
        "504f5354202f666f726d20485454502f312e310d0a486f73743a203132372e30",
        "2e302e313a31393032330d0a557365722d4167656e743a206375726c2f372e38",
    ),
    total: 155,
};

/// curl 7.88.1, `curl -s -I http://127.0.0.1:19024/` (to python3 -m http.server): its request.
const HTTP_HEAD_CURL: Fixture = Fixture {
    hex: concat!(
        "48454144202f20485454502f312e310d0a486f73743a203132372e302e302e31",
        "3a31393032340d0a557365722d4167656e743a206375726c2f372e38382e310d",
    ),
    total: 80,
};

/// Python 3.11.7 `python3 -m http.server 18082`: its HTTP/1.0 response to HTTP_HEAD_CURL.
const HTTP10_200_PYTHON: Fixture = Fixture {
    hex: concat!(
        "485454502f312e3020323030204f4b0d0a5365727665723a2053696d706c6548",
        "5454502f302e3620507974686f6e2f332e31312e370d0a446174653a2053756e",
    ),
    total: 156,
};

/// curl 7.88.1, `curl -s --http2-prior-knowledge http://127.0.0.1:19002/` (to nginx `listen ...
/// http2`): preface, SETTINGS, WINDOW_UPDATE (its HEADERS starts at byte 64).
const H2C_PREFACE_CURL: Fixture = Fixture {
    hex: concat!(
        "505249202a20485454502f322e300d0a0d0a534d0d0a0d0a0000120400000000",
        "0000030000006400040200000000020000000000000408000000000001ff0001",
    ),
    total: 104,
};

/// nginx 1.22.1 `listen 127.0.0.1:18081 http2;`: its first payload to H2C_PREFACE_CURL (SETTINGS of
/// 3 settings, WINDOW_UPDATE, SETTINGS ACK, HEADERS at byte 49).
const H2C_SETTINGS_NGINX: Fixture = Fixture {
    hex: concat!(
        "000012040000000000000300000080000400010000000500ffffff0000040800",
        "000000007fff0000000000040100000000000030010400000001887689aa6355",
    ),
    total: 106,
};

/// python3-grpcio 1.51.1 (grpc-core) client, `channel.unary_unary("/fixture.Echo/Say")(b"hello")`
/// on an insecure channel: its first payload.
const H2C_PREFACE_GRPCIO: Fixture = Fixture {
    hex: concat!(
        "505249202a20485454502f322e300d0a0d0a534d0d0a0d0a0000240400000000",
        "000002000000000003000000000004003fffff0005003fffff000600002000fe",
    ),
    total: 82,
};

/// python3-grpcio 1.51.1 server (generic handler for fixture.Echo/Say): its first payload
/// (SETTINGS, WINDOW_UPDATE, SETTINGS ACK).
const H2C_SETTINGS_GRPCIO: Fixture = Fixture {
    hex: concat!(
        "0000180400000000000004003fffff0005003fffff000600002000fe03000000",
        "01000004080000000000003f0000000000040100000000",
    ),
    total: 55,
};

/// python3-grpcio 1.51.1 server: its third payload, the response HEADERS (`:status 200` indexed,
/// then `content-type: application/grpc` with a literal name).
const GRPC_RESPONSE_HEADERS_GRPCIO: Fixture = Fixture {
    hex: concat!(
        "00004e01040000000188400c636f6e74656e742d74797065106170706c696361",
        "74696f6e2f677270634014677270632d6163636570742d656e636f64696e6717",
    ),
    total: 143,
};

/// nginx 1.22.1 h2c: the HEADERS frame at byte 49 of H2C_SETTINGS_NGINX's payload (`:status 200`,
/// `server`, `date`, `content-type: text/plain` Huffman-coded), as a later segment starting with it
/// would carry it; 47 bytes were logged.
const NGINX_H2_RESPONSE_HEADERS: Fixture = Fixture {
    hex: concat!(
        "000030010400000001887689aa6355e580ae212e1f6196dd6d5f4a01c52f948a",
        "0802714102e05eb8d054c5a37f5f87",
    ),
    total: 47,
};

/// curl 7.88.1 (OpenSSL 3.0), `curl -sk https://127.0.0.1:19003/` (to nginx `listen ... ssl`): its
/// ClientHello.
const TLS_CLIENT_HELLO_CURL: Fixture = Fixture {
    hex: concat!(
        "1603010200010001fc03035573c82eb6c5fe9cc5cfd7a5ca1aac58eb4a53d145",
        "35846baefae65389372fdb2060c4eea997e6d1614aed9881b1ee97a45c359ee6",
    ),
    total: 517,
};

/// nginx 1.22.1 with a self-signed certificate (`openssl req -x509 -newkey rsa:2048 -nodes`): its
/// ServerHello to TLS_CLIENT_HELLO_CURL.
const TLS_SERVER_HELLO_NGINX: Fixture = Fixture {
    hex: concat!(
        "160303006c0200006803030975d0a4c55f67218d78bc9ef306c843932ea234e2",
        "4bdd500605c52e53150712201ab02d9c6a555bd10de73c698026286c68aa551c",
    ),
    total: 1223,
};

/// nginx 1.22.1, same connection: its third payload, an application data record (the encrypted
/// response).
const TLS_APP_DATA_NGINX: Fixture = Fixture {
    hex: concat!(
        "17030300b1637c69ac3a31c177fba1743ea5fdc562bd71737ff0a82829bb1986",
        "694c8383b313fb2bbd0cfda8eb3155da6c775d3139facdaddcb505416613cf8e",
    ),
    total: 182,
};

/// OpenSSL 3.0.x, `openssl s_client -connect 127.0.0.1:19019 -tls1_2 -quiet` (to `openssl s_server
/// -www`): its ClientHello.
const TLS12_CLIENT_HELLO_OPENSSL: Fixture = Fixture {
    hex: concat!(
        "16030100b7010000b303032809ef0b1b179eac495a158e6868254af1d1acdd15",
        "e336e8db6ba3b99317b418000038c02cc030009fcca9cca8ccaac02bc02f009e",
    ),
    total: 188,
};

/// `openssl s_server -accept 18444 -cert cert.pem -key key.pem -www -quiet`: its ServerHello to
/// TLS12_CLIENT_HELLO_OPENSSL.
const TLS12_SERVER_HELLO_OPENSSL: Fixture = Fixture {
    hex: concat!(
        "16030300410200003d0303dbbaebc177d0f20c6fd67c623557e7f0cfc17b1448",
        "655727444f574e4752440100c030000015ff01000100000b0004030001020023",
    ),
    total: 1180,
};

/// OpenSSL 3.0.x, `openssl s_client -connect 127.0.0.1:19020 -tls1_3 -quiet`: its ClientHello.
const TLS13_CLIENT_HELLO_OPENSSL: Fixture = Fixture {
    hex: concat!(
        "16030100dc010000d80303f4e420f98e196c9158ece02c1b911252ece4ff667f",
        "ab06e6a87ccd4909adf7662004bea1f6f0d7da5db8994575b20f4055599cd6d3",
    ),
    total: 225,
};

/// `openssl s_server` (as above): its TLS 1.3 ServerHello to TLS13_CLIENT_HELLO_OPENSSL.
const TLS13_SERVER_HELLO_OPENSSL: Fixture = Fixture {
    hex: concat!(
        "160303007a020000760303b27a56638fa70c5a5cfbf88017ae6d737de2114ed5",
        "d51086fee978be29b953a32004bea1f6f0d7da5db8994575b20f4055599cd6d3",
    ),
    total: 1337,
};

/// psql 15.18, `psql -h 127.0.0.1 -p 19004 -U postgres -c "select 1"` (to PostgreSQL 15.18 without
/// SSL): its first payload, the SSLRequest (the server answers "N").
const PG_SSL_REQUEST_PSQL: Fixture = Fixture {
    hex: "0000000804d2162f",
    total: 8,
};

/// psql 15.18, same connection: its second payload, the StartupMessage.
const PG_STARTUP_PSQL: Fixture = Fixture {
    hex: concat!(
        "0000003f000300007573657200706f7374677265730064617461626173650070",
        "6f737467726573006170706c69636174696f6e5f6e616d65007073716c0000",
    ),
    total: 63,
};

/// PostgreSQL 15.18 (trust auth), to `psql "host=127.0.0.1 port=19005 user=postgres sslmode=disable
/// gssencmode=disable"`: its first payload, AuthenticationOk then ParameterStatus messages.
const PG_AUTH_OK_POSTGRES: Fixture = Fixture {
    hex: concat!(
        "520000000800000000530000001a6170706c69636174696f6e5f6e616d650070",
        "73716c005300000019636c69656e745f656e636f64696e670055544638005300",
    ),
    total: 414,
};

/// psql 15.18, `PGPASSWORD=... psql "host=127.0.0.1 port=19018 user=fx dbname=postgres
/// sslmode=disable"`: its StartupMessage (first payload).
const PG_STARTUP_SCRAM_PSQL: Fixture = Fixture {
    hex: concat!(
        "00000039000300007573657200667800646174616261736500706f7374677265",
        "73006170706c69636174696f6e5f6e616d65007073716c0000",
    ),
    total: 57,
};

/// PostgreSQL 15.18 with `host all fx 127.0.0.1/32 scram-sha-256`: its first payload,
/// AuthenticationSASL (SCRAM-SHA-256).
const PG_AUTH_SASL_POSTGRES: Fixture = Fixture {
    hex: "52000000170000000a534352414d2d5348412d3235360000",
    total: 24,
};

/// psql 15.18, `-c "select 1"`: its second payload (sslmode=disable), a simple Query.
const PG_QUERY_PSQL: Fixture = Fixture {
    hex: "510000000d73656c656374203100",
    total: 14,
};

/// MariaDB 10.11.19 (Debian mariadb-server), to `mariadb -h 127.0.0.1 -P 19012 -u root --skip-ssl
/// -e "select 1"`: its first payload, the greeting.
const MYSQL_GREETING_MARIADB: Fixture = Fixture {
    hex: concat!(
        "640000000a352e352e352d31302e31312e31392d4d6172696144422d302b6465",
        "6231327531000500000051444053616e266d00fef72d0200ff81150000000000",
    ),
    total: 104,
};

/// mariadb client 15.1 (10.11.19), same command: its first payload, the handshake response.
const MYSQL_HANDSHAKE_RESPONSE_MARIADB: Fixture = Fixture {
    hex: concat!(
        "ba00000184a2bf00000010002100000000000000000000000000000000000000",
        "1d000000726f6f7400006d7973716c5f6e61746976655f70617373776f726400",
    ),
    total: 190,
};

/// mariadb client, same command: its second payload, COM_QUERY "select 1".
const MYSQL_QUERY_MARIADB: Fixture = Fixture {
    hex: "090000000373656c6563742031",
    total: 13,
};

/// redis-cli 7.0.15, `redis-cli -p 19006 ping` (to redis-server 7.0.15): its command.
const REDIS_PING_CLI: Fixture = Fixture {
    hex: "2a310d0a24340d0a70696e670d0a",
    total: 14,
};

/// redis-server 7.0.15: its reply to REDIS_PING_CLI.
const REDIS_PONG_SERVER: Fixture = Fixture {
    hex: "2b504f4e470d0a",
    total: 7,
};

/// redis-cli 7.0.15, `redis-cli -p 19007 set greeting hello`.
const REDIS_SET_CLI: Fixture = Fixture {
    hex: concat!(
        "2a330d0a24330d0a7365740d0a24380d0a6772656574696e670d0a24350d0a68",
        "656c6c6f0d0a",
    ),
    total: 38,
};

/// redis-server 7.0.15: its reply to REDIS_SET_CLI.
const REDIS_OK_SERVER: Fixture = Fixture {
    hex: "2b4f4b0d0a",
    total: 5,
};

/// redis-cli 7.0.15, `redis-cli -p 19008 get nosuchkey`.
const REDIS_GET_CLI: Fixture = Fixture {
    hex: "2a320d0a24330d0a6765740d0a24390d0a6e6f737563686b65790d0a",
    total: 28,
};

/// redis-server 7.0.15: its reply to REDIS_GET_CLI (null bulk string).
const REDIS_NULL_SERVER: Fixture = Fixture {
    hex: "242d310d0a",
    total: 5,
};

/// redis-cli 7.0.15, `redis-cli -p 19009 nosuchcommand`.
const REDIS_UNKNOWN_COMMAND_CLI: Fixture = Fixture {
    hex: "2a310d0a2431330d0a6e6f73756368636f6d6d616e640d0a",
    total: 24,
};

/// redis-server 7.0.15: its error reply to REDIS_UNKNOWN_COMMAND_CLI.
const REDIS_ERR_SERVER: Fixture = Fixture {
    hex: concat!(
        "2d45525220756e6b6e6f776e20636f6d6d616e6420276e6f73756368636f6d6d",
        "616e64272c2077697468206172677320626567696e6e696e6720776974683a20",
    ),
    total: 66,
};

/// redis-cli 7.0.15, `redis-cli -p 19010 incr counter`.
const REDIS_INCR_CLI: Fixture = Fixture {
    hex: "2a320d0a24340d0a696e63720d0a24370d0a636f756e7465720d0a",
    total: 27,
};

/// redis-server 7.0.15: its integer reply to REDIS_INCR_CLI.
const REDIS_INTEGER_SERVER: Fixture = Fixture {
    hex: "3a310d0a",
    total: 4,
};

/// kcat 1.7.1 (librdkafka 2.0.2), `kcat -b 127.0.0.1:19014 -L` (to a listener that only logs): its
/// first request, ApiVersions v3.
const KAFKA_API_VERSIONS_V3_KCAT: Fixture = Fixture {
    hex: concat!(
        "000000240012000300000001000772646b61666b61000b6c696272646b61666b",
        "6106322e302e3200",
    ),
    total: 40,
};

/// kafka-python 2.0.2 (Debian python3-kafka), `KafkaConsumer(bootstrap_servers="127.0.0.1:19015")`
/// (to a listener that only logs): its first request, ApiVersions v0.
const KAFKA_API_VERSIONS_V0_KAFKA_PYTHON: Fixture = Fixture {
    hex: "0000001c001200000000000100126b61666b612d707974686f6e2d322e302e32",
    total: 32,
};

/// kafka-python 2.0.2, same connection: its second request, Metadata v0.
const KAFKA_METADATA_V0_KAFKA_PYTHON: Fixture = Fixture {
    hex: concat!(
        "00000020000300000000000200126b61666b612d707974686f6e2d322e302e32",
        "00000000",
    ),
    total: 36,
};

/// amqp-tools 0.11.0 (rabbitmq-c), `amqp-declare-queue -s 127.0.0.1:19013 -q fixture` (to RabbitMQ
/// 3.10.8): its first payload, the protocol header.
const AMQP_HEADER_AMQP_TOOLS: Fixture = Fixture {
    hex: "414d515000000901",
    total: 8,
};

/// RabbitMQ 3.10.8 (Debian rabbitmq-server): its first payload, connection.start.
const AMQP_CONNECTION_START_RABBITMQ: Fixture = Fixture {
    hex: concat!(
        "010000000001ef000a000a0009000001ca0c6361706162696c69746965734600",
        "0000c7127075626c69736865725f636f6e6669726d7374011a65786368616e67",
    ),
    total: 503,
};

/// amqp-tools 0.11.0, same connection: its second payload, connection.start-ok.
const AMQP_CONNECTION_START_OK_AMQP_TOOLS: Fixture = Fixture {
    hex: concat!(
        "01000000000140000a000b0000011c0770726f64756374530000000a72616262",
        "69746d712d630776657273696f6e5300000006302e31312e3008706c6174666f",
    ),
    total: 328,
};

/// pymongo 3.11.0 (Debian python3-pymongo),
/// `MongoClient("mongodb://127.0.0.1:19016/?directConnection=true")`: the monitor connection's
/// first payload, OP_QUERY isMaster on admin.$cmd.
const MONGO_OP_QUERY_ISMASTER_PYMONGO: Fixture = Fixture {
    hex: concat!(
        "ff000000f81a0b2900000000d40700000000000061646d696e2e24636d640000",
        "000000ffffffffd80000001069736d6173746572000100000003636c69656e74",
    ),
    total: 255,
};

/// pymongo 3.11.0, same client: the application connection's first payload, OP_QUERY isMaster with
/// a negative requestID (0xd024a4cb).
const MONGO_OP_QUERY_NEGATIVE_ID_PYMONGO: Fixture = Fixture {
    hex: concat!(
        "11010000cba424d000000000d40700000000000061646d696e2e24636d640000",
        "000000ffffffffea0000001069736d6173746572000100000003636c69656e74",
    ),
    total: 273,
};

/// pymongo 3.11.0, `client.admin.command("ping")`: OP_MSG on the application connection (what a
/// connection already open carries).
const MONGO_OP_MSG_PING_PYMONGO: Fixture = Fixture {
    hex: concat!(
        "88000000a33c728300000000dd0700000000000000730000001070696e670001",
        "000000036c736964001e0000000569640010000000046eff9ca652f34dca8d23",
    ),
    total: 136,
};

/// pymongo 3.11.0, `client.test.things.insert_one({"a": 1})`: OP_MSG insert.
const MONGO_OP_MSG_INSERT_PYMONGO: Fixture = Fixture {
    hex: concat!(
        "bd0000006111d4bb00000000dd07000000000000007c00000002696e73657274",
        "00070000007468696e677300086f7264657265640001036c736964001e000000",
    ),
    total: 189,
};

/// NOT a real mongod (none is packaged here): OP_REPLY to MONGO_OP_QUERY_NEGATIVE_ID_PYMONGO built
/// from the wire-protocol spec with pymongo's bson encoder by a throwaway fake server, which
/// pymongo accepted. Not classified: OP_REPLY has no rule (the client's OP_QUERY before it has).
const MONGO_OP_REPLY_SPEC: Fixture = Fixture {
    hex: concat!(
        "ee000000e8030000cba424d00100000008000000000000000000000000000000",
        "01000000ca0000000869736d61737465720001106d6178576972655665727369",
    ),
    total: 238,
};

/// NOT a real mongod: OP_MSG reply `{ok: 1.0}` to MONGO_OP_MSG_PING_PYMONGO, built like
/// MONGO_OP_REPLY_SPEC; pymongo accepted it.
const MONGO_OP_MSG_REPLY_SPEC: Fixture = Fixture {
    hex: concat!(
        "26000000e9030000a33c7283dd070000000000000011000000016f6b00000000",
        "000000f03f00",
    ),
    total: 38,
};

/// OpenSSH 9.2p1 client, `ssh -p 19022 127.0.0.1`: its first payload, the banner.
const SSH_BANNER_OPENSSH: Fixture = Fixture {
    hex: concat!(
        "5353482d322e302d4f70656e5353485f392e3270312044656269616e2d322b64",
        "6562313275360d0a",
    ),
    total: 40,
};

/// iperf 3.12, `iperf3 -c 127.0.0.1 -p 19021 -t 1` (to `iperf3 -s -p 15201`): the data connection's
/// first payload, the 37-byte cookie.
const IPERF3_COOKIE: Fixture = Fixture {
    hex: concat!(
        "697269746b7471656464656b7663797a647a7a77736b34776872733761716779",
        "3369653400",
    ),
    total: 37,
};

/// iperf 3.12, same run: the control connection's second payload (a 4-byte length and the JSON
/// parameters).
const IPERF3_CONTROL_JSON: Fixture = Fixture {
    hex: concat!(
        "0000007b7b22746370223a747275652c226f6d6974223a302c2274696d65223a",
        "312c226e756d223a302c22626c6f636b636f756e74223a302c22706172616c6c",
    ),
    total: 127,
};

/// iperf 3.12 server: the control connection's first payload (state 9, PARAM_EXCHANGE).
const IPERF3_STATE_BYTE: Fixture = Fixture {
    hex: "09",
    total: 1,
};

/// iperf 3.12, same run: the data connection's second payload (65536 bytes of random data).
const IPERF3_BULK_DATA: Fixture = Fixture {
    hex: concat!(
        "c561379578a47e70729531dc3b76a08dc78e257e0167f7c1013c41c1728bc508",
        "2c017c1e437dd98bafb5b22437100f6358ffaabcef49f68ac9aa9789fb291a51",
    ),
    total: 65536,
};

/// DiG 9.18.49, `dig +tcp @127.0.0.1 -p 19025 example.com A` (to a listener that only logs): its
/// query (2-byte length, DNS header, question, EDNS cookie).
const DNS_TCP_QUERY_DIG: Fixture = Fixture {
    hex: concat!(
        "003434de01200001000000000001076578616d706c6503636f6d000001000100",
        "002904d000000000000c000a00086403596a8259b0f8",
    ),
    total: 54,
};

/// Every fixture and what [`classify`] must make of it: the last ones are none of the protocols,
/// and HEADERS frames are for [`classify_http2_headers`] only.
const CASES: &[Case] = &[
    ("HTTP_GET_CURL", HTTP_GET_CURL, HTTP),
    ("HTTP_200_NGINX", HTTP_200_NGINX, HTTP),
    ("HTTP_POST_CURL", HTTP_POST_CURL, HTTP),
    ("HTTP_HEAD_CURL", HTTP_HEAD_CURL, HTTP),
    ("HTTP10_200_PYTHON", HTTP10_200_PYTHON, HTTP),
    ("H2C_PREFACE_CURL", H2C_PREFACE_CURL, HTTP2),
    ("H2C_SETTINGS_NGINX", H2C_SETTINGS_NGINX, HTTP2),
    ("H2C_PREFACE_GRPCIO", H2C_PREFACE_GRPCIO, HTTP2),
    ("H2C_SETTINGS_GRPCIO", H2C_SETTINGS_GRPCIO, HTTP2),
    (
        "GRPC_RESPONSE_HEADERS_GRPCIO",
        GRPC_RESPONSE_HEADERS_GRPCIO,
        UNKNOWN,
    ),
    (
        "NGINX_H2_RESPONSE_HEADERS",
        NGINX_H2_RESPONSE_HEADERS,
        UNKNOWN,
    ),
    ("TLS_CLIENT_HELLO_CURL", TLS_CLIENT_HELLO_CURL, TLS),
    ("TLS_SERVER_HELLO_NGINX", TLS_SERVER_HELLO_NGINX, TLS),
    ("TLS_APP_DATA_NGINX", TLS_APP_DATA_NGINX, TLS),
    (
        "TLS12_CLIENT_HELLO_OPENSSL",
        TLS12_CLIENT_HELLO_OPENSSL,
        TLS,
    ),
    (
        "TLS12_SERVER_HELLO_OPENSSL",
        TLS12_SERVER_HELLO_OPENSSL,
        TLS,
    ),
    (
        "TLS13_CLIENT_HELLO_OPENSSL",
        TLS13_CLIENT_HELLO_OPENSSL,
        TLS,
    ),
    (
        "TLS13_SERVER_HELLO_OPENSSL",
        TLS13_SERVER_HELLO_OPENSSL,
        TLS,
    ),
    ("PG_SSL_REQUEST_PSQL", PG_SSL_REQUEST_PSQL, POSTGRES),
    ("PG_STARTUP_PSQL", PG_STARTUP_PSQL, POSTGRES),
    ("PG_AUTH_OK_POSTGRES", PG_AUTH_OK_POSTGRES, POSTGRES),
    ("PG_STARTUP_SCRAM_PSQL", PG_STARTUP_SCRAM_PSQL, POSTGRES),
    ("PG_AUTH_SASL_POSTGRES", PG_AUTH_SASL_POSTGRES, POSTGRES),
    ("PG_QUERY_PSQL", PG_QUERY_PSQL, POSTGRES),
    ("MYSQL_GREETING_MARIADB", MYSQL_GREETING_MARIADB, MYSQL),
    (
        "MYSQL_HANDSHAKE_RESPONSE_MARIADB",
        MYSQL_HANDSHAKE_RESPONSE_MARIADB,
        MYSQL,
    ),
    ("MYSQL_QUERY_MARIADB", MYSQL_QUERY_MARIADB, MYSQL),
    ("REDIS_PING_CLI", REDIS_PING_CLI, REDIS),
    ("REDIS_PONG_SERVER", REDIS_PONG_SERVER, REDIS),
    ("REDIS_SET_CLI", REDIS_SET_CLI, REDIS),
    ("REDIS_OK_SERVER", REDIS_OK_SERVER, REDIS),
    ("REDIS_GET_CLI", REDIS_GET_CLI, REDIS),
    ("REDIS_NULL_SERVER", REDIS_NULL_SERVER, REDIS),
    (
        "REDIS_UNKNOWN_COMMAND_CLI",
        REDIS_UNKNOWN_COMMAND_CLI,
        REDIS,
    ),
    ("REDIS_ERR_SERVER", REDIS_ERR_SERVER, REDIS),
    ("REDIS_INCR_CLI", REDIS_INCR_CLI, REDIS),
    ("REDIS_INTEGER_SERVER", REDIS_INTEGER_SERVER, REDIS),
    (
        "KAFKA_API_VERSIONS_V3_KCAT",
        KAFKA_API_VERSIONS_V3_KCAT,
        KAFKA,
    ),
    (
        "KAFKA_API_VERSIONS_V0_KAFKA_PYTHON",
        KAFKA_API_VERSIONS_V0_KAFKA_PYTHON,
        KAFKA,
    ),
    (
        "KAFKA_METADATA_V0_KAFKA_PYTHON",
        KAFKA_METADATA_V0_KAFKA_PYTHON,
        KAFKA,
    ),
    ("AMQP_HEADER_AMQP_TOOLS", AMQP_HEADER_AMQP_TOOLS, AMQP),
    (
        "AMQP_CONNECTION_START_RABBITMQ",
        AMQP_CONNECTION_START_RABBITMQ,
        AMQP,
    ),
    (
        "AMQP_CONNECTION_START_OK_AMQP_TOOLS",
        AMQP_CONNECTION_START_OK_AMQP_TOOLS,
        AMQP,
    ),
    (
        "MONGO_OP_QUERY_ISMASTER_PYMONGO",
        MONGO_OP_QUERY_ISMASTER_PYMONGO,
        MONGO,
    ),
    (
        "MONGO_OP_QUERY_NEGATIVE_ID_PYMONGO",
        MONGO_OP_QUERY_NEGATIVE_ID_PYMONGO,
        MONGO,
    ),
    (
        "MONGO_OP_MSG_PING_PYMONGO",
        MONGO_OP_MSG_PING_PYMONGO,
        MONGO,
    ),
    (
        "MONGO_OP_MSG_INSERT_PYMONGO",
        MONGO_OP_MSG_INSERT_PYMONGO,
        MONGO,
    ),
    ("MONGO_OP_REPLY_SPEC", MONGO_OP_REPLY_SPEC, UNKNOWN),
    ("MONGO_OP_MSG_REPLY_SPEC", MONGO_OP_MSG_REPLY_SPEC, MONGO),
    ("SSH_BANNER_OPENSSH", SSH_BANNER_OPENSSH, UNKNOWN),
    ("IPERF3_COOKIE", IPERF3_COOKIE, UNKNOWN),
    ("IPERF3_CONTROL_JSON", IPERF3_CONTROL_JSON, UNKNOWN),
    ("IPERF3_STATE_BYTE", IPERF3_STATE_BYTE, UNKNOWN),
    ("IPERF3_BULK_DATA", IPERF3_BULK_DATA, UNKNOWN),
    ("DNS_TCP_QUERY_DIG", DNS_TCP_QUERY_DIG, UNKNOWN),
];

/// Not recorded: the HEADERS frame of a gRPC response as an HPACK encoder with Huffman coding
/// and indexed names writes it (no grpc-go or grpc-java server was available here): the header
/// block is `hpack.Encoder().encode([(":status", "200"), ("content-type",
/// "application/grpc")], huffman=True)` of the hpack 4.0.0 Python library, `88 5f 8b` and the
/// 11 Huffman bytes; stream 1, END_HEADERS.
const GRPC_RESPONSE_HEADERS_HPACK: Fixture = Fixture {
    hex: "00000e010400000001885f8b1d75d0620d263d4c4d6564",
    total: 23,
};

/// What [`classify_http2_headers`] must make of the HEADERS fixtures; every other fixture is
/// unknown to it.
const HEADERS_CASES: &[Case] = &[
    (
        "GRPC_RESPONSE_HEADERS_GRPCIO",
        GRPC_RESPONSE_HEADERS_GRPCIO,
        GRPC,
    ),
    (
        "GRPC_RESPONSE_HEADERS_HPACK",
        GRPC_RESPONSE_HEADERS_HPACK,
        GRPC,
    ),
    (
        "NGINX_H2_RESPONSE_HEADERS",
        NGINX_H2_RESPONSE_HEADERS,
        HTTP2,
    ),
];

/// Both entry points with their fixtures.
const TABLES: &[(&str, Classifier, &[Case])] = &[
    ("classify", classify, CASES),
    (
        "classify_http2_headers",
        classify_http2_headers,
        HEADERS_CASES,
    ),
];

#[test]
fn every_fixture_classifies_to_its_protocol() {
    let mut wrong = Vec::new();
    for (function, f, cases) in TABLES {
        for (name, fixture, expected) in *cases {
            let got = run(*f, &fixture.bytes(), fixture.total);
            if got != *expected {
                wrong.push(format!(
                    "{function}({name}): expected {expected:?}, got {got:?}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn headers_classifier_takes_no_other_fixture() {
    for (name, fixture, _) in CASES {
        if HEADERS_CASES.iter().any(|(n, _, _)| n == name) {
            continue;
        }
        let got = run(classify_http2_headers, &fixture.bytes(), fixture.total);
        assert_eq!(got, UNKNOWN, "{name}");
    }
}

/// A payload cut short (a shorter first segment) may be unknown or less specific, but never
/// another protocol.
#[test]
fn truncated_fixtures_are_never_another_protocol() {
    let mut wrong = Vec::new();
    for (function, f, cases) in TABLES {
        for (name, fixture, expected) in *cases {
            let bytes = fixture.bytes();
            for cut in 0..bytes.len() {
                let got = run(*f, &bytes[..cut], cut);
                if !compatible(got, *expected) {
                    wrong.push(format!("{function}({name} cut at {cut}): {got:?}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The shortest prefix each fixture is recognised from (printed with `--nocapture`).
#[test]
fn shortest_recognised_prefix_of_each_fixture() {
    for (function, f, cases) in TABLES {
        for (name, fixture, expected) in *cases {
            if *expected == UNKNOWN {
                continue;
            }
            let bytes = fixture.bytes();
            let shortest = (0..=bytes.len())
                .find(|&cut| {
                    let total = if cut == bytes.len() {
                        fixture.total
                    } else {
                        cut
                    };
                    run(*f, &bytes[..cut], total) == *expected
                })
                .expect("the whole fixture is recognised");
            println!("{function}({name}): {shortest} of {} bytes", fixture.total);
            assert!(shortest <= CLASSIFY_BYTES);
        }
    }
}

/// Bytes of the buffer from `len` on do not count, whatever the kernel left there.
#[test]
fn bytes_past_len_are_not_read() {
    for (function, f, _) in TABLES {
        for (name, fixture, _) in CASES.iter().chain(HEADERS_CASES) {
            let bytes = fixture.bytes();
            for cut in 0..bytes.len() {
                let zeros = run_with(*f, &bytes[..cut], cut, 0);
                let ones = run_with(*f, &bytes[..cut], cut, 0xFF);
                let rest = run(*f, &bytes, cut);
                assert_eq!(zeros, ones, "{function}({name} cut at {cut})");
                assert_eq!(zeros, rest, "{function}({name} cut at {cut})");
            }
        }
    }
}

#[test]
fn text_lines_and_banners_are_unknown() {
    let lines: &[&[u8]] = &[
        b"hello\n",
        b"hello world\r\n",
        b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6\r\n",
        b"220 mail.example.com ESMTP Postfix\r\n",
        b"+OK Dovecot ready.\r\n",
        b"* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR] Dovecot ready.\r\n",
        b"-ERR",
        b"-ABC x\r\n",
        b"$ ls -la\n",
        b"*** hello ***\n",
        b":-)\n",
        b"GET",
        b"GET index.html\r\n",
        b"HTTP/2 200\r\n",
        b"PRI * HTTP/2.0\r\n",
        b"AMQP",
        b"{\"jsonrpc\":\"2.0\",\"method\":\"ping\"}\n",
        b"Q: what?\n",
        b"Robert'); DROP TABLE Students;--",
        b"select 1",
        b"\x00",
        &[0x00; 16],
        &[0x00; 64],
        &[0xFF; 64],
    ];
    for (function, f, _) in TABLES {
        for line in lines {
            let got = run(*f, line, line.len());
            assert_eq!(
                got,
                UNKNOWN,
                "{function}({:?})",
                String::from_utf8_lossy(line)
            );
        }
    }
}

/// xorshift64*: deterministic, so a failure names its input.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Uniformly random payloads (an echo of random data, iperf3's bulk data): none may be
/// classified by either entry point. 1,000,000 full buffers with random payload lengths from 48
/// up, and 1,000,000 shorter payloads (1..=47 bytes).
#[test]
fn uniformly_random_payloads_are_unknown() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut hits = Vec::new();
    let mut buf = ClassifyBuf::ZERO;
    for i in 0..2_000_000u32 {
        rng.fill(&mut buf.bytes);
        let len = if i % 2 == 0 {
            CLASSIFY_BYTES + (rng.next() % 65_000) as usize
        } else {
            1 + (rng.next() % (CLASSIFY_BYTES as u64 - 1)) as usize
        };
        for (function, f, _) in TABLES {
            let got = f(&buf, len);
            if got != UNKNOWN {
                let shown = &buf.bytes[..len.min(CLASSIFY_BYTES)];
                hits.push(format!("{function}: {got:?} len {len}: {shown:02x?}"));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "{} false positives:\n{}",
        hits.len(),
        hits.join("\n")
    );
}

/// Random printable text lines of 16..=64 bytes ending in CRLF (a line protocol, an echo of
/// text): none may be classified.
#[test]
fn random_text_lines_are_unknown() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut hits = Vec::new();
    for _ in 0..500_000 {
        let len = 16 + (rng.next() % 49) as usize;
        let mut line: Vec<u8> = (0..len - 2)
            .map(|_| b' ' + (rng.next() % 95) as u8)
            .collect();
        line.extend_from_slice(b"\r\n");
        for (function, f, _) in TABLES {
            let got = run(*f, &line, len);
            if got != UNKNOWN {
                hits.push(format!(
                    "{function}: {got:?}: {:?}",
                    String::from_utf8_lossy(&line)
                ));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "{} false positives:\n{}",
        hits.len(),
        hits.join("\n")
    );
}

/// Each protocol fixture with one random byte changed is still its protocol, less specific or
/// unknown: a damaged message is never taken for another protocol.
#[test]
fn mutated_fixtures_are_never_another_protocol() {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut wrong = Vec::new();
    for (function, f, cases) in TABLES {
        for (name, fixture, expected) in *cases {
            if *expected == UNKNOWN {
                continue;
            }
            let bytes = fixture.bytes();
            for _ in 0..20_000 {
                let mut m = bytes.clone();
                let at = (rng.next() % m.len() as u64) as usize;
                m[at] = rng.next() as u8;
                let got = run(*f, &m, fixture.total);
                if !compatible(got, *expected) {
                    wrong.push(format!(
                        "{function}({name} byte {at} = {:#04x}): {got:?}",
                        m[at]
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Never panics (in this debug build that includes arithmetic overflow), whatever the
        /// bytes and the length.
        #[test]
        fn never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..=CLASSIFY_BYTES),
            len in any::<usize>(),
        ) {
            let buf = ClassifyBuf::from_prefix(&bytes);
            let _ = classify(&buf, len);
            let _ = classify_http2_headers(&buf, len);
        }

        /// The result depends only on the first `len` bytes.
        #[test]
        fn only_the_first_len_bytes_count(
            bytes in proptest::collection::vec(any::<u8>(), CLASSIFY_BYTES),
            len in 0..=CLASSIFY_BYTES,
            other in any::<u8>(),
        ) {
            let a = ClassifyBuf::from_prefix(&bytes);
            let mut b = a;
            for x in &mut b.bytes[len..] {
                *x = other;
            }
            prop_assert_eq!(classify(&a, len), classify(&b, len));
            prop_assert_eq!(classify_http2_headers(&a, len), classify_http2_headers(&b, len));
        }
    }
}
