#!/usr/bin/python3
"""Smoke test for RelayLink (mininet/nearchat_link.py). Run as root:

    go build -o bin/linkdelay ./cmd/linkdelay
    python3 mininet/test_link.py          # then: mn -c

Builds small Mininet networks of Linux bridges (no controller, no OVS) with
RelayLink links and checks:
  * h1 - s1 - h2 with delay=10ms, bw=10: ping RTT ~ 40 ms (2 links x 2 x 10 ms),
    htb on the hosts' interfaces, a TCP transfer limited to about 10 Mbit/s,
    configLinkStatus down/up, relays gone after net.stop();
  * a chain of 5 links (the paper's c1 -> serv2 path): RTT ~ 100 ms;
  * without bw: TCP throughput through two relays (catches offload bugs).
All traffic stays inside the hosts' namespaces created here.
Prints 'N passed, N failed' and exits non-zero on any failure.
"""

import argparse
import os
import re
import shutil
import statistics
import sys
import time
import traceback

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# pylint: disable=wrong-import-position
from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.nodelib import LinuxBridge

from nearchat_link import RelayLink, MID_RE

RTT_RE = re.compile(r'time=([0-9.]+) ms')


def ping_rtts(src, dst, count=20, interval=0.05):
    src.cmd('ping -n -c 1 -W 2', dst.IP())  # ARP warm-up
    out = src.cmd('ping -n -c %d -i %s -W 2 %s' % (count, interval, dst.IP()))
    return [float(x) for x in RTT_RE.findall(out)], out


def ping_ok(src, dst):
    src.cmd('ping -n -c 1 -W 1', dst.IP())
    return ' 0% packet loss' in src.cmd('ping -n -c 1 -W 1', dst.IP())


def build(links, delay='10ms', bw=None):
    """h1 - s1 - ... - s(links-1) - h2, every link a RelayLink."""
    net = Mininet(topo=None, switch=LinuxBridge, controller=None,
                  link=RelayLink, autoSetMacs=True, build=False)
    h1 = net.addHost('h1')
    h2 = net.addHost('h2')
    switches = [net.addSwitch('s%d' % (i + 1)) for i in range(links - 1)]
    chain = [h1] + switches + [h2]
    opts = {'delay': delay}
    if bw is not None:
        opts['bw'] = bw
    for a, b in zip(chain, chain[1:]):
        net.addLink(a, b, **opts)
    net.build()
    net.start()
    return net, h1, h2


def tcp_mbps(net, src, dst, seconds):
    """Mbit/s of a TCP transfer src -> dst (iperf if present, else socat)."""
    if shutil.which('iperf'):
        dst.cmd('iperf -s -p 5001 >/dev/null 2>&1 &')
        time.sleep(0.5)
        out = src.cmd('iperf -c %s -p 5001 -t %d -f m' % (dst.IP(), seconds))
        dst.cmd('kill %iperf')
        m = re.findall(r'([0-9.]+) Mbits/sec', out)
        if not m:
            raise AssertionError('iperf output: ' + out)
        return float(m[-1])
    size = 20 << 20
    dst.cmd('socat -u TCP-LISTEN:5001,reuseaddr OPEN:/dev/null &')
    time.sleep(0.5)
    start = time.time()
    src.cmd('head -c %d /dev/zero | socat -u STDIN TCP:%s:5001' % (size, dst.IP()))
    return size * 8 / (time.time() - start) / 1e6


def relays(net):
    return [l for l in net.links if isinstance(l, RelayLink)]


def check_rtt(results, name, rtts, want, tol):
    med = statistics.median(rtts)
    print('  %s: configured RTT %.0f ms, measured median %.2f ms '
          '(min %.2f, max %.2f, n=%d)' % (name, want, med, min(rtts), max(rtts), len(rtts)))
    results['rtt ' + name] = (med, want)
    assert abs(med - want) <= tol, 'median %.2f ms not within %.0f +- %.1f ms' % (med, want, tol)


def test_star(results):
    net, h1, h2 = build(2, delay='10ms', bw=10)
    try:
        assert all(l.relay_alive() for l in relays(net)), 'a relay is not running'
        rtts, out = ping_rtts(h1, h2)
        assert len(rtts) >= 15, 'pings lost:\n' + out
        check_rtt(results, '2 links', rtts, 40, 3)
        qd = h1.cmd('tc qdisc show dev h1-eth0')
        assert 'htb' in qd, 'no htb on h1-eth0: ' + qd
        mbps = tcp_mbps(net, h1, h2, 4)
        print('  TCP with bw=10: %.1f Mbit/s' % mbps)
        assert 5 <= mbps <= 11, 'bw=10 gave %.1f Mbit/s' % mbps
        net.configLinkStatus('h1', 's1', 'down')
        assert not ping_ok(h1, h2), 'ping works with h1-s1 down'
        net.configLinkStatus('h1', 's1', 'up')
        deadline = time.time() + 10
        while not ping_ok(h1, h2):
            assert time.time() < deadline, 'no ping 10 s after h1-s1 came back'
        assert all(l.relay_alive() for l in relays(net)), 'a relay died on down/up'
        print('  configLinkStatus down/up: ok')
        procs = [l.relay for l in relays(net)]
    finally:
        net.stop()
    assert all(p.poll() is not None for p in procs), 'relay left running'
    left = [n for n in os.listdir('/sys/class/net') if MID_RE.match(n)]
    assert not left, 'interfaces left behind: %s' % left


def test_chain(results):
    net, h1, h2 = build(5, delay='10ms')
    try:
        rtts, out = ping_rtts(h1, h2)
        assert len(rtts) >= 15, 'pings lost:\n' + out
        check_rtt(results, '5 links', rtts, 100, 3)
    finally:
        net.stop()


def test_throughput(results):
    net, h1, h2 = build(2, delay='10ms')
    try:
        mbps = tcp_mbps(net, h1, h2, 5)
        print('  TCP through 2 relays (10 ms each, no bw limit): %.0f Mbit/s' % mbps)
        results['throughput'] = mbps
        assert mbps > 100, 'only %.0f Mbit/s' % mbps
    finally:
        net.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('-v', action='store_true', help='Mininet info logging')
    parser.add_argument('tests', nargs='*', help='star, chain, throughput')
    args = parser.parse_args()
    if os.geteuid() != 0:
        print('test_link.py: needs root (Mininet)')
        return 2
    setLogLevel('info' if args.v else 'warning')
    tests = {'star': test_star, 'chain': test_chain, 'throughput': test_throughput}
    names = args.tests or list(tests)
    results, passed, failed = {}, 0, 0
    for name in names:
        print('%s:' % name)
        try:
            tests[name](results)
            passed += 1
            print('  PASS')
        except Exception:  # pylint: disable=broad-except
            failed += 1
            traceback.print_exc()
            print('  FAIL')
    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
