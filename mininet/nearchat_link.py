"""Mininet links with real delay on kernels without netem.

Mininet's TCLink implements ``delay=`` with the netem qdisc. Kernels built
without ``sch_netem`` (many cloud, container and WSL kernels) accept the
command's absence silently and the links have no delay at all. ``RelayLink``
puts a small userspace relay (``bin/linkdelay``, built from
``cmd/linkdelay``) in the middle of each link instead::

    node1:intf1 <=veth=> ldmXXXXXXa  [linkdelay]  ldmXXXXXXb <=veth=> node2:intf2

The two ``ldm...`` interfaces stay in Mininet's own (root) namespace, carry no
addresses, have IPv6 and ARP disabled and are promiscuous; the relay forwards
every frame between them after the link's one-way delay, in both directions.
The node ends are ordinary Mininet interfaces (``RelayIntf``, a ``TCIntf``),
so ``bw=`` (htb), ``net.configLinkStatus()`` and the rest keep working.

Use::

    from nearchat_link import link_class
    net = Mininet(switch=LinuxBridge, controller=None, link=link_class('auto'))
    net.addLink(h1, s1, delay='10ms', bw=10)

``link_class('auto')`` picks TCLink when netem works and RelayLink otherwise.
Build the relay first: ``go build -o bin/linkdelay ./cmd/linkdelay`` (or set
``NEARCHAT_LINKDELAY`` to its path). ``python3 nearchat_link.py`` reports
whether netem works here; ``python3 nearchat_link.py --cleanup`` removes
middle interfaces left behind by a crashed run (their relays then exit by
themselves).
"""

import functools
import os
import random
import re
import select
import subprocess
import sys
import tempfile
import time

from mininet.link import Link, TCIntf, TCLink
from mininet.log import debug, info, warn

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BINARY = os.environ.get(
    'NEARCHAT_LINKDELAY', os.path.join(REPO_ROOT, 'bin', 'linkdelay'))
MID_PREFIX = 'ldm'
MID_RE = re.compile(r'^ldm[0-9a-f]{6}[ab]$')
# Not directly in /tmp: "mn -c" deletes /tmp/*.log.
LOG_DIR = os.environ.get('NEARCHAT_LINKDELAY_LOGDIR', os.path.join(
    tempfile.gettempdir(), 'nearchat-linkdelay'))

_DELAY_RE = re.compile(
    r'^\s*([0-9]*\.?[0-9]+)\s*(us|usec|usecs|ms|msec|msecs|s|sec|secs)?\s*$')
_UNIT_NS = {None: 1000, 'us': 1000, 'usec': 1000, 'usecs': 1000,
            'ms': 10**6, 'msec': 10**6, 'msecs': 10**6,
            's': 10**9, 'sec': 10**9, 'secs': 10**9}


def parse_delay(delay):
    """Turn a Mininet/tc delay ('10ms', '500us', '1s', 10) into a Go
    duration string for linkdelay, or None for no delay. As with tc, a bare
    number means microseconds."""
    if delay is None or delay == '':
        return None
    m = _DELAY_RE.match(str(delay).lower())
    if not m:
        raise ValueError('cannot parse link delay %r (use e.g. "10ms")' % (delay,))
    ns = int(round(float(m.group(1)) * _UNIT_NS[m.group(2)]))
    if ns == 0:
        return None
    for unit, size in (('s', 10**9), ('ms', 10**6), ('us', 1000)):
        if ns % size == 0:
            return '%d%s' % (ns // size, unit)
    return '%dns' % ns


def _run(args, check=False):
    "Run a command quietly; return (returncode, combined output)."
    proc = subprocess.run(args, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          universal_newlines=True, check=False)
    if check and proc.returncode != 0:
        raise Exception('%s failed: %s' % (' '.join(args), proc.stdout.strip()))
    return proc.returncode, proc.stdout


def _intf_exists(name):
    return os.path.exists('/sys/class/net/' + name)


def _new_mid_id():
    "A fresh id whose two middle interface names are unused here."
    while True:
        ident = '%06x' % random.randrange(1 << 24)
        if not (_intf_exists(MID_PREFIX + ident + 'a') or
                _intf_exists(MID_PREFIX + ident + 'b')):
            return ident


class RelayIntf(TCIntf):
    """TCIntf whose delay is done by the link's relay: delay (and the other
    netem-only options, which the relay does not emulate) never reach tc, so
    bw= still sets up htb exactly as with TCLink."""

    def config(self, delay=None, jitter=None, loss=None,
               max_queue_size=None, **params):
        # pylint: disable=arguments-differ
        link = self.link
        if delay and link is not None and not getattr(link, 'relay_delay', None):
            warn('*** %s: delay=%s ignored: a RelayLink delay is fixed when '
                 'the link is created\n' % (self, delay))
        for name, value in (('jitter', jitter), ('loss', loss),
                            ('max_queue_size', max_queue_size)):
            if value:
                warn('*** %s: %s=%s is not supported by RelayLink; '
                     'ignored\n' % (self, name, value))
        return TCIntf.config(self, **params)


class RelayLink(TCLink):
    """A link whose delay is applied by a userspace relay process.

    Parameters as for TCLink (delay, bw, ...), plus:
      relay_bin: path of the linkdelay binary (default: the repo's
                 bin/linkdelay, or $NEARCHAT_LINKDELAY)
      relay_args: extra command-line arguments for linkdelay (list)
      relay_log: file that receives the relay's stderr (default:
                 $NEARCHAT_LINKDELAY_LOGDIR or /tmp/nearchat-linkdelay/,
                 linkdelay-ID.log; removed at stop if empty)
    delay applies to each direction (one-way), like TCLink's delay on both
    ends; a delay given only in params1/params2 applies to the direction
    leaving that end. Without any delay the link is a plain veth pair and
    no relay runs."""

    binary = DEFAULT_BINARY
    ready_timeout = 10.0

    # pylint: disable=too-many-arguments
    def __init__(self, node1, node2, port1=None, port2=None,
                 intfName1=None, intfName2=None, addr1=None, addr2=None,
                 relay_bin=None, relay_args=None, relay_log=None, **params):
        p1 = params.get('params1') or {}
        p2 = params.get('params2') or {}
        both = params.get('delay')
        self.delay_ab = parse_delay(p1.get('delay', both))  # node1 -> node2
        self.delay_ba = parse_delay(p2.get('delay', both))  # node2 -> node1
        self.relay_delay = self.delay_ab or self.delay_ba
        self.relay_bin = relay_bin or self.binary
        self.relay_args = list(relay_args or [])
        self.relay = None
        self._relay_log = None
        ident = _new_mid_id()
        self.mid_a = MID_PREFIX + ident + 'a'
        self.mid_b = MID_PREFIX + ident + 'b'
        self.relay_log = relay_log or os.path.join(
            LOG_DIR, 'linkdelay-%s.log' % ident)
        if self.relay_delay and not os.access(self.relay_bin, os.X_OK):
            raise Exception(
                'RelayLink: relay binary %s not found or not executable; build '
                'it with "go build -o bin/linkdelay ./cmd/linkdelay"' %
                self.relay_bin)
        params.setdefault('cls1', RelayIntf)
        params.setdefault('cls2', RelayIntf)
        TCLink.__init__(self, node1, node2, port1=port1, port2=port2,
                        intfName1=intfName1, intfName2=intfName2,
                        addr1=addr1, addr2=addr2, **params)
        if self.relay_delay:
            try:
                self._start_relay()
            except Exception:
                self.delete()
                raise
            info('(relay %s delay) ' % self._describe_delay())

    def _describe_delay(self):
        if self.delay_ab == self.delay_ba:
            return self.delay_ab
        return '%s/%s' % (self.delay_ab or '0', self.delay_ba or '0')

    # Link.__init__ calls this; an instance method is fine (OVSLink does it).
    # pylint: disable=arguments-differ,signature-differs
    def makeIntfPair(self, intfname1, intfname2, addr1=None, addr2=None,
                     node1=None, node2=None, deleteIntfs=True):
        if not self.relay_delay:
            return Link.makeIntfPair(intfname1, intfname2, addr1, addr2,
                                     node1, node2, deleteIntfs=deleteIntfs)
        if deleteIntfs:
            for node, name in ((node1, intfname1), (node2, intfname2)):
                if node is not None:
                    node.cmd('ip link del', name)
                else:
                    _run(['ip', 'link', 'del', name])
        try:
            self._make_veth(self.mid_a, intfname1, addr1, node1)
            self._make_veth(self.mid_b, intfname2, addr2, node2)
            for mid in (self.mid_a, self.mid_b):
                self._prepare_mid(mid)
        except Exception:
            for mid in (self.mid_a, self.mid_b):
                if _intf_exists(mid):
                    _run(['ip', 'link', 'del', mid])
            raise
        return None

    @staticmethod
    def _make_veth(mid, name, addr, node):
        """Create veth mid (here) <-> name, the latter directly inside
        node's namespace when node has one."""
        args = ['ip', 'link', 'add', 'name', mid, 'type', 'veth',
                'peer', 'name', name]
        if addr:
            args += ['address', addr]
        if node is not None and getattr(node, 'inNamespace', False):
            args += ['netns', str(node.pid)]
        _run(args, check=True)

    @staticmethod
    def _prepare_mid(mid):
        # IPv6 off before the interface goes up: no DAD/RS/MLD from this
        # namespace leaks into the emulated link.
        path = '/proc/sys/net/ipv6/conf/%s/disable_ipv6' % mid
        if os.path.exists(path):
            with open(path, 'w') as f:
                f.write('1\n')
        _run(['ip', 'link', 'set', 'dev', mid, 'arp', 'off', 'promisc', 'on',
              'up'], check=True)

    def _start_relay(self):
        args = [self.relay_bin, '-a', self.mid_a, '-b', self.mid_b,
                '-delay', self.delay_ab or '0s',
                '-parent-pid', str(os.getpid()), '-ready']
        if self.delay_ba != self.delay_ab:
            # -delay-ba 0 would mean "same as -delay": use 1ns for none.
            args += ['-delay-ba', self.delay_ba or '1ns']
        args += self.relay_args
        debug('*** starting relay: %s\n' % ' '.join(args))
        logdir = os.path.dirname(self.relay_log)
        if logdir:
            os.makedirs(logdir, exist_ok=True)
        self._relay_log = open(self.relay_log, 'ab')
        # Own session: a Ctrl-C in the Mininet CLI does not reach the relay;
        # stop() ends it, and it exits by itself if Mininet dies.
        self.relay = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self._relay_log, close_fds=True, start_new_session=True)
        deadline = time.time() + self.ready_timeout
        line = b''
        while time.time() < deadline:
            ready, _, _ = select.select([self.relay.stdout], [], [], 0.2)
            if ready:
                line = self.relay.stdout.readline()
                break
            if self.relay.poll() is not None:
                break
        if line.strip() != b'ready':
            self._stop_relay()
            with open(self.relay_log, 'rb') as f:
                why = f.read().decode(errors='replace').strip()
            raise Exception('RelayLink: linkdelay %s<->%s did not start: %s' %
                            (self.mid_a, self.mid_b, why or 'no output'))

    def relay_alive(self):
        "Is this link's relay process running?"
        return self.relay is not None and self.relay.poll() is None

    def _stop_relay(self):
        proc, self.relay = self.relay, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout:
                proc.stdout.close()
        if self._relay_log is not None:
            self._relay_log.close()
            self._relay_log = None
            try:  # keep only logs that say something
                if os.path.getsize(self.relay_log) == 0:
                    os.remove(self.relay_log)
            except OSError:
                pass

    def delete(self):
        "Stop the relay and delete both veth pairs."
        self._stop_relay()
        for attr in ('intf1', 'intf2'):
            intf = getattr(self, attr, None)
            if intf is not None:
                intf.delete()  # removes the veth and so its middle peer
                setattr(self, attr, None)
        for mid in (self.mid_a, self.mid_b):
            if _intf_exists(mid):
                _run(['ip', 'link', 'del', mid])

    def stop(self):
        self.delete()


@functools.lru_cache(maxsize=None)
def netem_works():
    """Can the netem qdisc be used here? Tries it on a throwaway interface in
    a temporary network namespace (root only; False otherwise)."""
    ns = 'nmprobe%06x' % random.randrange(1 << 24)
    if _run(['ip', 'netns', 'add', ns])[0] != 0:
        return False
    try:
        if _run(['ip', '-n', ns, 'link', 'add', 'nmp0', 'type', 'dummy'])[0]:
            if _run(['ip', '-n', ns, 'link', 'add', 'nmp0', 'type', 'veth',
                     'peer', 'name', 'nmp1'])[0]:
                return False
        _run(['ip', '-n', ns, 'link', 'set', 'nmp0', 'up'])
        rc, _ = _run(['ip', 'netns', 'exec', ns, 'tc', 'qdisc', 'add', 'dev',
                      'nmp0', 'root', 'netem', 'delay', '1ms'])
        if rc != 0:
            return False
        _, out = _run(['ip', 'netns', 'exec', ns, 'tc', 'qdisc', 'show',
                       'dev', 'nmp0'])
        return 'netem' in out
    finally:
        _run(['ip', 'netns', 'del', ns])


def link_class(mode='auto'):
    """The link class for mode 'netem' (TCLink), 'relay' (RelayLink) or
    'auto' (TCLink if netem works here, else RelayLink)."""
    mode = (mode or 'auto').lower()
    if mode == 'netem':
        return TCLink
    if mode == 'relay':
        return RelayLink
    if mode == 'auto':
        return TCLink if netem_works() else RelayLink
    raise ValueError("link mode must be 'auto', 'netem' or 'relay', not %r"
                     % (mode,))


def cleanup():
    """Delete middle interfaces left over from an earlier run in this
    namespace (their relays notice and exit). Returns the names deleted."""
    gone = []
    for name in sorted(os.listdir('/sys/class/net')):
        if MID_RE.match(name) and _intf_exists(name):
            if _run(['ip', 'link', 'del', name])[0] == 0:
                gone.append(name)
    return gone


def main(argv):
    if '--cleanup' in argv:
        names = cleanup()
        print('removed %d leftover relay interface(s)%s' %
              (len(names), (': ' + ' '.join(names)) if names else ''))
        return 0
    works = netem_works()
    print('netem works: %s; link_class("auto") -> %s; relay binary: %s%s' % (
        works, link_class('auto').__name__, DEFAULT_BINARY,
        '' if os.access(DEFAULT_BINARY, os.X_OK) else ' (missing: build it)'))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
