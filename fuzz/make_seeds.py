#!/usr/bin/env python3
"""Regenerates the fuzz seed corpus (fuzz/seeds/<target>/) from real data of this host.

Not run by the tests or CI: the seeds are committed. Run as root (it creates a network
namespace, runs dnsmasq and reads the kernel's BTF), under `flock /tmp/priv.lock`:

    flock /tmp/priv.lock python3 fuzz/make_seeds.py

What each seed is:
- btf: a subset of /sys/kernel/btf/vmlinux: the structs the loader asks about (sock, tcp_sock,
  net, task_struct, files_struct, fdtable, file, socket, msghdr, css_set, cgroup, kernfs_node)
  and every type they contain by
  value, renumbered; pointer targets are cut to `void` so the subset stays small.
- tracefs_format: the format files of the tracepoints the tracer reads.
- dns_message: queries dig sent and answers dnsmasq gave (UDP, and a TCP stream), recorded by a
  relay between them on loopback.
- capture_records: those packets as capture ring records (PacketHeader + payload), and an HTTP
  transaction record of a real request line.
- ring_record: single records of the same kinds.
- conntrack_netlink: the kernel's answer to a conntrack dump in a namespace with a DNAT rule.
- route_netlink: the kernel's answers to route questions (a local, a gateway and an
  unreachable destination) in a namespace with a documentation-address route.
- cgroup_path: this host's cgroup paths and container paths of real runtimes.
- proc_text: this host's /proc/self/mountinfo, /proc/self/status, ip_local_port_range, osrelease.
"""

import hashlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def save(target, data, name=None):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    name = name or hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------------------------------------
# BTF subset

# BTF kinds whose third word is a type id kept by value: typedef, volatile, const, restrict,
# type_tag. Pointers (2) are cut to void; arrays, structs and unions are walked below.
BY_VALUE_REF = (8, 9, 10, 11, 18)


def btf_subset(blob, roots):
    magic, version, flags, hdr_len = struct.unpack_from("<HBBI", blob, 0)
    assert magic == 0xEB9F, "not BTF"
    type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", blob, 8)
    types_sec = blob[hdr_len + type_off : hdr_len + type_off + type_len]
    strs = blob[hdr_len + str_off : hdr_len + str_off + str_len]

    # Walk the type section: (id -> (offset, length, kind, vlen, name_off)).
    types = [None]
    off = 0
    while off < len(types_sec):
        name_off, info, size_or_type = struct.unpack_from("<III", types_sec, off)
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        extra = {
            1: 4,  # int
            3: 12,  # array
            4: 12 * vlen,  # struct
            5: 12 * vlen,  # union
            6: 8 * vlen,  # enum
            13: 8 * vlen,  # func_proto
            14: 4,  # var
            15: 12 * vlen,  # datasec
            17: 4,  # decl_tag
            19: 12 * vlen,  # enum64
        }.get(kind, 0)
        types.append((off, 12 + extra, kind, vlen, name_off))
        off += 12 + extra

    def name(name_off):
        end = strs.index(b"\0", name_off)
        return strs[name_off:end].decode()

    by_name = {}
    for tid, t in enumerate(types):
        if t and t[2] in (4, 5) and t[4]:
            by_name.setdefault(name(t[4]), tid)

    # Types reachable by value (pointers are cut to void).
    keep, todo = set(), [by_name[r] for r in roots]
    while todo:
        tid = todo.pop()
        if tid == 0 or tid in keep:
            continue
        keep.add(tid)
        off, length, kind, vlen, _ = types[tid]
        _, _, ref = struct.unpack_from("<III", types_sec, off)
        if kind in BY_VALUE_REF:
            todo.append(ref)
        elif kind == 3:
            elem, index, _ = struct.unpack_from("<III", types_sec, off + 12)
            todo += [elem, index]
        elif kind in (4, 5):
            for i in range(vlen):
                _, mtype, _ = struct.unpack_from("<III", types_sec, off + 12 + 12 * i)
                todo.append(mtype)

    order = sorted(keep)
    new_id = {old: i + 1 for i, old in enumerate(order)}
    new_id[0] = 0
    out_strs = bytearray(b"\0")
    str_map = {0: 0}

    def remap_str(o):
        if o not in str_map:
            str_map[o] = len(out_strs)
            out_strs.extend(name(o).encode() + b"\0")
        return str_map[o]

    out_types = bytearray()
    for old in order:
        off, length, kind, vlen, name_off = types[old]
        rec = bytearray(types_sec[off : off + length])
        n, info, ref = struct.unpack_from("<III", rec, 0)
        if kind == 2:  # ptr: to void
            ref = 0
        elif kind in BY_VALUE_REF:
            ref = new_id[ref]
        struct.pack_into("<III", rec, 0, remap_str(n), info, ref)
        if kind == 3:
            elem, index, nelems = struct.unpack_from("<III", rec, 12)
            struct.pack_into("<III", rec, 12, new_id[elem], new_id[index], nelems)
        elif kind in (4, 5):
            for i in range(vlen):
                mn, mt, mo = struct.unpack_from("<III", rec, 12 + 12 * i)
                struct.pack_into("<III", rec, 12 + 12 * i, remap_str(mn), new_id[mt], mo)
        elif kind in (6, 19):
            step = 8 if kind == 6 else 12
            for i in range(vlen):
                (en,) = struct.unpack_from("<I", rec, 12 + step * i)
                struct.pack_into("<I", rec, 12 + step * i, remap_str(en))
        out_types += rec
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(out_types), len(out_types), len(out_strs))
    return hdr + bytes(out_types) + bytes(out_strs)


def btf_seeds():
    with open("/sys/kernel/btf/vmlinux", "rb") as f:
        blob = f.read()
    roots = [
        "sock", "tcp_sock", "net", "task_struct", "files_struct", "fdtable", "file", "socket",
        "msghdr", "css_set", "cgroup", "kernfs_node",
    ]
    subset = btf_subset(blob, roots)
    save("btf", subset, "vmlinux-subset")
    # A smaller one: only what struct sock holds.
    save("btf", btf_subset(blob, ["sock"]), "vmlinux-sock")
    print(f"btf: {len(subset)} bytes (of {len(blob)})")


# ---------------------------------------------------------------------------------------------
# tracefs formats, /proc, cgroups


def text_seeds():
    for event in [
        "sock/inet_sock_set_state",
        "sock/sock_send_length",
        "sock/sock_recv_length",
        "syscalls/sys_enter_sendto",
        "syscalls/sys_exit_recvmsg",
        "tcp/tcp_retransmit_skb",
        "net/netif_receive_skb",
    ]:
        path = f"/sys/kernel/tracing/events/{event}/format"
        if os.path.exists(path):
            save("tracefs_format", open(path, "rb").read(), event.replace("/", "-"))
    for path in [
        "/proc/self/mountinfo",
        "/proc/self/status",
        "/proc/sys/net/ipv4/ip_local_port_range",
        "/proc/sys/kernel/osrelease",
    ]:
        save("proc_text", open(path, "rb").read(), path.strip("/").replace("/", "-"))
    paths = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                for line in open(f"/proc/{pid}/cgroup"):
                    paths.add(line.strip().split(":", 2)[-1])
            except OSError:
                pass
    for base, dirs, _ in os.walk("/sys/fs/cgroup"):
        paths.add(base[len("/sys/fs/cgroup") :] or "/")
        if len(paths) > 40:
            break
    # Container paths of real runtimes (as their documentation shows them).
    paths |= {
        "/system.slice/docker-4f1c8f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6.scope",
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod3c1d2f3e_4a5b_6c7d_8e9f_0a1b2c3d4e5f.slice/cri-containerd-8e3ae5f8c9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6.scope",
        "/machine.slice/libpod-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope/container",
        "/kubepods/besteffort/pod12345678-1234-1234-1234-123456789abc/abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
        "/ecs/1f2e3d4c5b6a4978a1b2c3d4e5f60718/1f2e3d4c5b6a4978a1b2c3d4e5f60718-1234567890",
    }
    for p in sorted(paths)[:60]:
        save("cgroup_path", p)


# ---------------------------------------------------------------------------------------------
# DNS (dig <-> relay <-> dnsmasq), as raw messages and capture records

PACKET_KIND_DNS, PACKET_KIND_HTTP = 1, 2
EGRESS, INGRESS = 1, 2
AF_INET = 2


def packet_record(payload, sport, dport, direction, proto=17, seq=0, flags=0, cookie=1, ts=1_000_000):
    addr = bytes([127, 0, 0, 1]) + bytes(12)
    header = struct.pack(
        "<QQQIIII16s16sHHHBBBB6x",
        ts, cookie, 0, seq, 4026531840, len(payload), len(payload),
        addr, addr, sport, dport, AF_INET, proto, direction, PACKET_KIND_DNS, flags,
    )
    assert len(header) == 88
    rec = header + payload
    return rec + bytes(-len(rec) % 4)  # the ring pads records to 8; the framing needs 4


def http_record(path, status, method=1, role=2):
    addr = bytes([127, 0, 0, 1]) + bytes(12)
    rec = struct.pack(
        "<QQQQIHH16s16sHHHBBBBH4x160s",
        1_000_000, 7, 3_500_000, 0, 4026531840, len(path), status,
        addr, addr, 80, 40000, AF_INET, method, role, PACKET_KIND_HTTP, 0,
        min(len(path), 160), path[:160],
    )
    assert len(rec) == 248
    return rec


def frame(records):
    out = bytearray()
    for r in records:
        assert len(r) % 4 == 0 and len(r) <= 1020
        out.append(len(r) // 4)
        out += r
    return bytes(out)


def dns_seeds():
    port = 53531
    dnsmasq = subprocess.Popen(
        ["dnsmasq", "-k", "--no-resolv", "--no-hosts", "--listen-address=127.0.0.1",
         "--bind-interfaces", f"--port={port}", "--address=/example.test/192.0.2.10",
         "--host-record=v6.example.test,2001:db8::10", "--cname=alias.example.test,example.test",
         "--txt-record=txt.example.test,hello", "--log-facility=/dev/null"],
    )
    time.sleep(0.5)
    try:
        # UDP: a relay on loopback records what dig sends and dnsmasq answers.
        relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        relay.bind(("127.0.0.1", 0))
        rport = relay.getsockname()[1]
        pairs = []

        def udp_relay(n):
            for _ in range(n):
                q, client = relay.recvfrom(4096)
                up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                up.settimeout(2)
                up.sendto(q, ("127.0.0.1", port))
                a, _ = up.recvfrom(4096)
                relay.sendto(a, client)
                pairs.append((q, a, client[1]))

        queries = [
            ("example.test", "A"), ("v6.example.test", "AAAA"), ("alias.example.test", "A"),
            ("txt.example.test", "TXT"), ("missing.invalid", "A"), ("example.test", "MX"),
        ]
        t = threading.Thread(target=udp_relay, args=(len(queries),))
        t.start()
        for name, qtype in queries:
            subprocess.run(["dig", "+tries=1", "+time=2", "-p", str(rport), "@127.0.0.1", name, qtype],
                           stdout=subprocess.DEVNULL, check=True)
        t.join()
        records = []
        for q, a, cport in pairs:
            save("dns_message", q)
            save("dns_message", a)
            save("dns_message", a[: len(a) // 2])  # cut at a snap length
            qr = packet_record(q, cport, 53, EGRESS)
            ar = packet_record(a, 53, cport, INGRESS)
            save("ring_record", qr)
            records += [qr, ar]
            save("capture_records", frame([qr, ar]))
        save("capture_records", frame(records[:6]), "udp-several")

        # TCP: dig +tcp through a TCP relay; the two streams' bytes as segments.
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        tport = lsock.getsockname()[1]
        streams = {}

        def tcp_relay():
            c, addr = lsock.accept()
            up = socket.create_connection(("127.0.0.1", port), timeout=2)
            q = c.recv(4096)
            up.sendall(q)
            a = b""
            while len(a) < 2 or len(a) < 2 + struct.unpack(">H", a[:2])[0]:
                a += up.recv(4096)
            c.sendall(a)
            streams["q"], streams["a"], streams["port"] = q, a, addr[1]
            c.close()
            up.close()

        t = threading.Thread(target=tcp_relay)
        t.start()
        subprocess.run(["dig", "+tcp", "+tries=1", "+time=2", "-p", str(tport), "@127.0.0.1",
                        "alias.example.test", "A"], stdout=subprocess.DEVNULL, check=True)
        t.join()
        q, a, cport = streams["q"], streams["a"], streams["port"]
        save("dns_message", a[2:], "tcp-answer")
        psh_ack, fin_ack = 0x18, 0x11
        segs = [
            packet_record(q[:1], cport, 53, EGRESS, 6, 1000, psh_ack),  # the length prefix split
            packet_record(q[1:], cport, 53, EGRESS, 6, 1001, psh_ack),
            packet_record(a[:20], 53, cport, INGRESS, 6, 5000, psh_ack),
            packet_record(a[10:], 53, cport, INGRESS, 6, 5010, psh_ack),  # overlaps
            packet_record(b"", 53, cport, INGRESS, 6, 5000 + len(a), fin_ack),
        ]
        save("capture_records", frame(segs), "tcp-stream")
        save("ring_record", segs[2])
    finally:
        dnsmasq.terminate()
        dnsmasq.wait()

    for path, status, method in [(b"/", 200, 1), (b"/api/v1/users/12345/orders", 404, 2),
                                 (b"/static/app.js", 304, 1)]:
        r = http_record(path, status, method)
        save("ring_record", r)
        save("capture_records", frame([r]))


# ---------------------------------------------------------------------------------------------
# netlink (in a throwaway namespace)

NETLINK_ROUTE, NETLINK_NETFILTER = 0, 12


def netlink_dump(proto, request):
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, proto)
    s.settimeout(2)
    s.bind((0, 0))
    s.send(request)
    out = []
    while True:
        d = s.recv(65536)
        out.append(d)
        # A dump ends with NLMSG_DONE (3) or NLMSG_ERROR (2); a plain request has one answer.
        kind, flags = struct.unpack_from("<HH", d, 4)
        if kind in (2, 3) or not flags & 0x2:  # NLM_F_MULTI
            break
    s.close()
    return out


def route_request(dst, seq):
    # RTM_GETROUTE (26), NLM_F_REQUEST; rtmsg AF_INET dst_len 32; RTA_DST (1).
    rta = struct.pack("<HH4s", 8, 1, socket.inet_aton(dst))
    rtm = struct.pack("<BBBBBBBBI", AF_INET, 32, 0, 0, 0, 0, 0, 0, 0)
    body = rtm + rta
    return struct.pack("<IHHII", 16 + len(body), 26, 1, seq, 0) + body


def netlink_child():
    """Runs inside the namespace: routes and conntrack there."""
    sh = lambda *a: subprocess.run(a, check=True, stdout=subprocess.DEVNULL)
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", "nt0", "type", "veth", "peer", "name", "nt1")
    sh("ip", "link", "set", "nt1", "up")
    sh("ip", "link", "set", "nt0", "up")
    sh("ip", "addr", "add", "192.0.2.1/24", "dev", "nt0")
    sh("ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.254")
    sh("ip", "route", "add", "unreachable", "203.0.113.0/24")
    for i, dst in enumerate(["127.0.0.1", "198.51.100.7", "192.0.2.9", "203.0.113.5"]):
        for d in netlink_dump(NETLINK_ROUTE, route_request(dst, 100 + i)):
            save("route_netlink", d, f"route-{dst}")
    # Conntrack: a DNAT of 198.51.100.80:80 to 127.0.0.1:8080 and a UDP flow through it.
    nft = """
table ip nt {
  chain out { type nat hook output priority -100; ip daddr 198.51.100.80 udp dport 80 dnat to 127.0.0.1:8080; }
  chain track { type filter hook output priority 0; ct state new accept; }
}
"""
    subprocess.run(["nft", "-f", "-"], input=nft.encode(), check=True)
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 8080))
    cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cli.sendto(b"x", ("198.51.100.80", 80))
    cli.sendto(b"y", ("127.0.0.1", 8080))
    srv.recvfrom(16)
    six = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    six.sendto(b"z", ("::1", 9))
    # IPCTNL_MSG_CT_GET | NFNL_SUBSYS_CTNETLINK << 8, NLM_F_REQUEST | NLM_F_DUMP; nfgenmsg AF_UNSPEC.
    req = struct.pack("<IHHII", 20, (1 << 8) | 1, 0x301, 7, 0) + bytes(4)
    for i, d in enumerate(netlink_dump(NETLINK_NETFILTER, req)):
        save("conntrack_netlink", d, f"dump-{i}")


def netlink_seeds():
    ns = f"ntseeds{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__), "--netlink-child"],
                       check=True)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--netlink-child"]:
        netlink_child()
        sys.exit(0)
    btf_seeds()
    text_seeds()
    dns_seeds()
    netlink_seeds()
    for t in sorted(os.listdir(ROOT)):
        print(t, len(os.listdir(os.path.join(ROOT, t))))
