#!/usr/bin/python3
"""The paper's chat network in Mininet, with Central and serv2-serv4 running.

Run as root from the repository (after ``make build``)::

    sudo /usr/bin/python3 mininet/chat_network.py [--delay-mode auto|netem|relay]

Topology (DESIGN.md, "Mininet topology"): hosts c1 10.0.0.1, c2 10.0.0.2,
serv2 10.0.0.3, serv3 10.0.0.4, serv4 10.0.0.5, central 10.0.0.6,
serv1 10.0.0.7; switches s1-s6; twelve links of 10 ms and 10 Mbit/s each::

    c1, c2, central, serv1 -- s6 -- s5 -- s4 -- serv4
                              |
                              s3 -- serv3
                              |
                              s2 -- s1 -- serv2

Central starts in host central, chat servers in serv2, serv3 and serv4;
serv1, the closest server to both clients, is held back so that a chat starts
on serv3 and moves to serv1 once it comes up. The script then opens the
Mininet CLI and prints what to type.

Link delay comes from netem (TCLink) where the kernel has it, and otherwise
from a userspace relay per link (RelayLink, see nearchat_link.py):
``--delay-mode`` forces either. Switches are Linux bridges unless
``--switch ovs`` is asked for (and Open vSwitch works here).

This module also holds what scenario.py shares with it: the topology
(build_network), the expected round-trip times computed from it
(expected_rtt_ms, best_server) and the process handling (ChatProcesses).
"""

import argparse
import collections
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# pylint: disable=wrong-import-position
from mininet.cli import CLI
from mininet.log import info, setLogLevel
from mininet.net import Mininet
from mininet.node import OVSBridge
from mininet.nodelib import LinuxBridge

import nearchat_link

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(REPO_ROOT, 'bin')

HOSTS = collections.OrderedDict([
    ('c1', '10.0.0.1'),
    ('c2', '10.0.0.2'),
    ('serv2', '10.0.0.3'),
    ('serv3', '10.0.0.4'),
    ('serv4', '10.0.0.5'),
    ('central', '10.0.0.6'),
    ('serv1', '10.0.0.7'),
])
SWITCHES = ['s1', 's2', 's3', 's4', 's5', 's6']
LINKS = [
    ('c1', 's6'), ('c2', 's6'), ('central', 's6'), ('serv1', 's6'),
    ('s6', 's5'), ('s5', 's4'), ('s4', 'serv4'),
    ('s6', 's3'), ('s3', 'serv3'), ('s3', 's2'), ('s2', 's1'),
    ('s1', 'serv2'),
]
LINK_DELAY_MS = 10
LINK_BW_MBIT = 10
CLIENTS = ['c1', 'c2']
SERVERS = ['serv1', 'serv2', 'serv3', 'serv4']
LATE_SERVER = 'serv1'  # held back at start, as in the paper's demo

CHAT_PORT = 3002
REST_PORT = 8080
CONTROL_PORT = 8081

# Short intervals so that the demo moves within seconds (the paper: 3 s
# heartbeats, 15 s to offline, a 4 s scan; Central's default dwell is 10 s).
DEMO_TIMING = {'heartbeat': '1s', 'offline_after': '3s', 'scan': '2s',
               'min_dwell': '5s'}


def hops(src, dst, down=()):
    """Number of links on the path src -> dst (None when unreachable);
    down lists links, as (a, b) pairs in either order, that are down.
    The topology is a tree, so the path is unique."""
    cut = {frozenset(link) for link in down}
    adj = collections.defaultdict(list)
    for a, b in LINKS:
        if frozenset((a, b)) not in cut:
            adj[a].append(b)
            adj[b].append(a)
    dist = {src: 0}
    queue = collections.deque([src])
    while queue:
        node = queue.popleft()
        if node == dst:
            return dist[node]
        for nxt in adj[node]:
            if nxt not in dist:
                dist[nxt] = dist[node] + 1
                queue.append(nxt)
    return None


def expected_rtt_ms(src, dst, down=()):
    "Configured round-trip time src <-> dst in ms, or None if unreachable."
    n = hops(src, dst, down)
    return None if n is None else 2 * n * LINK_DELAY_MS


def best_server(clients, servers, down=()):
    """The server Central should pick for a room of clients among servers:
    it must be reachable from every client and from Central (or Central
    marks it offline), and minimises the maximum member RTT, then the sum.
    Returns None when several servers tie (the pick is then random) or none
    qualifies."""
    scored = []
    for srv in servers:
        if expected_rtt_ms('central', srv, down) is None:
            continue
        rtts = [expected_rtt_ms(c, srv, down) for c in clients]
        if None in rtts:
            continue
        scored.append(((max(rtts), sum(rtts)), srv))
    if not scored:
        return None
    scored.sort()
    if len(scored) > 1 and scored[0][0] == scored[1][0]:
        return None
    return scored[0][1]


def ovs_works():
    "Is Open vSwitch installed and its daemon answering?"
    if not shutil.which('ovs-vsctl'):
        return False
    proc = subprocess.run(['ovs-vsctl', '--timeout=3', 'show'],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          check=False)
    return proc.returncode == 0


def build_network(delay_mode='auto', switch='lxbr', relay_bin=None):
    """Build and start the paper's network. Returns (net, link class used).
    delay_mode: 'auto', 'netem' or 'relay'; switch: 'lxbr' or 'ovs'."""
    link = nearchat_link.link_class(delay_mode)
    if delay_mode == 'netem' and not nearchat_link.netem_works():
        raise RuntimeError('--delay-mode netem: the netem qdisc does not work '
                           'on this kernel (links would have no delay); use '
                           '--delay-mode relay or auto')
    if switch == 'ovs':
        if not ovs_works():
            raise RuntimeError('--switch ovs: Open vSwitch is not installed or '
                               'its daemon is not running here')
        switch_cls = OVSBridge
    elif switch == 'lxbr':
        switch_cls = LinuxBridge
    else:
        raise ValueError('switch must be lxbr or ovs, not %r' % (switch,))
    if relay_bin:
        nearchat_link.RelayLink.binary = relay_bin
    net = Mininet(topo=None, switch=switch_cls, controller=None, link=link,
                  autoSetMacs=True, build=False)
    try:
        for name, ip in HOSTS.items():
            net.addHost(name, ip=ip + '/24')
        for name in SWITCHES:
            net.addSwitch(name)
        for a, b in LINKS:
            net.addLink(a, b, delay='%dms' % LINK_DELAY_MS, bw=LINK_BW_MBIT)
        net.build()
        net.start()
    except BaseException:
        net.stop()
        raise
    return net, link


DASHBOARD_PORT = 8088


class DashboardRelay:
    """Shows Central's dashboard to this machine's browser. Central runs in
    the network namespace of host central, whose 127.0.0.1 is not this
    machine's; it serves the dashboard on a Unix socket instead (file
    system paths cross namespaces), and this relays 127.0.0.1:PORT here to
    it, one pair of threads per connection."""

    def __init__(self, sock_path, port=DASHBOARD_PORT):
        self.path = sock_path
        self.ln = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ln.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.ln.bind(('127.0.0.1', port))
        except OSError:
            self.ln.bind(('127.0.0.1', 0))  # taken: any free port
        self.ln.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self):
        return 'http://127.0.0.1:%d/' % self.ln.getsockname()[1]

    def _accept(self):
        while True:
            try:
                c, _ = self.ln.accept()
            except OSError:
                return  # closed
            u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                u.connect(self.path)
            except OSError:
                c.close()
                u.close()
                continue
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.ln.close()


class ChatProcesses:
    """Starts nearchat programs inside Mininet hosts and stops them again.
    Every process gets its own log file in logdir; stop_all() ends them all
    (SIGTERM, then SIGKILL), only ever by the PIDs it started."""

    def __init__(self, net, bindir, secret, logdir=None, timing=None,
                 central_args=(), nice=0):
        self.net = net
        # Emulated hosts share the machine's CPUs; on a busy machine a
        # negative nice value keeps the programs' timing closer to that of
        # separate hosts (the relays run SCHED_FIFO for the same reason).
        self.nice = nice
        self.bindir = os.path.abspath(bindir)
        self.secret = secret
        self.logdir = logdir or tempfile.mkdtemp(prefix='nearchat-mininet-')
        self.timing = dict(DEMO_TIMING, **(timing or {}))
        self.central_args = list(central_args)
        self.dashboard = None  # DashboardRelay, once Central is up
        self.procs = {}  # name -> (Popen, log file)
        # Central and chatserver read the secret from the environment: it
        # stays off command lines and logs.
        self.env = dict(os.environ, NEARCHAT_SECRET=secret)

    def binary(self, name):
        return os.path.join(self.bindir, name)

    def central_addr(self, port):
        return '%s:%d' % (HOSTS['central'], port)

    def central_cmd(self):
        return [self.binary('central'),
                '-rest', self.central_addr(REST_PORT),
                '-control', self.central_addr(CONTROL_PORT),
                '-heartbeat', self.timing['heartbeat'],
                '-offline-after', self.timing['offline_after'],
                '-scan', self.timing['scan'],
                '-min-dwell', self.timing['min_dwell'],
                '-dashboard', 'unix:' + self.dashboard_sock()] + self.central_args

    def dashboard_sock(self):
        return os.path.join(self.logdir, 'dashboard.sock')

    def server_cmd(self, host, cli=False):
        return [self.binary('chatserver'),
                '-listen', '%s:%d' % (HOSTS[host], CHAT_PORT)] + (
                    ['-id=' + host] if cli else ['-id', host]) + [
                    '-central', self.central_addr(REST_PORT),
                    # The lab runs without ticket keys.
                    '-insecure']

    def client_cmd(self, name):
        return [self.binary('chat'), '-name', name,
                '-central', self.central_addr(REST_PORT),
                '-control', self.central_addr(CONTROL_PORT)]

    def log_path(self, name):
        return os.path.join(self.logdir, name + '.log')

    def start(self, name, host, cmd, stdout=None):
        """Start cmd in host as process name. stdout=None sends stdout and
        stderr to the log file; otherwise stdout goes there (e.g. PIPE) and
        stderr to the log file."""
        if name in self.procs and self.procs[name][0].poll() is None:
            raise RuntimeError('%s is already running' % name)
        log = open(self.log_path(name), 'ab')
        log.write(('# %s: %s\n' % (time.strftime('%H:%M:%S'),
                                   ' '.join(cmd))).encode())
        log.flush()
        node = self.net[host]
        if self.nice:  # nice execs the program: the PID stays the same
            cmd = ['nice', '-n', str(self.nice)] + list(cmd)
        proc = node.popen(cmd, stdin=subprocess.DEVNULL,
                          stdout=log if stdout is None else stdout,
                          stderr=log if stdout is not None else subprocess.STDOUT,
                          cwd=REPO_ROOT, env=self.env)
        self.procs[name] = (proc, log)
        return proc

    def running(self, name):
        return name in self.procs and self.procs[name][0].poll() is None

    def wait_listening(self, host, port, timeout=10.0, name=None):
        """Wait until something listens on port in host; fail early if the
        process name has exited."""
        deadline = time.time() + timeout
        node = self.net[host]
        while time.time() < deadline:
            out = node.cmd('ss -Hltn "sport = :%d"' % port)
            if 'LISTEN' in out:
                return
            if name and not self.running(name):
                raise RuntimeError('%s exited (status %s); log %s:\n%s' % (
                    name, self.procs[name][0].returncode, self.log_path(name),
                    self.tail(name)))
            time.sleep(0.1)
        raise RuntimeError('nothing listens on %s:%d after %.0f s; log %s:\n%s'
                           % (host, port, timeout, self.log_path(name or host),
                              self.tail(name or host)))

    def tail(self, name, lines=15):
        try:
            with open(self.log_path(name), 'rb') as f:
                data = f.read().decode(errors='replace').splitlines()
        except OSError:
            return '(no log)'
        return '\n'.join(data[-lines:])

    def start_central(self):
        self.start('central', 'central', self.central_cmd())
        self.wait_listening('central', REST_PORT, name='central')
        self.wait_listening('central', CONTROL_PORT, name='central')
        deadline = time.time() + 10
        while not os.path.exists(self.dashboard_sock()):
            if time.time() > deadline or not self.running('central'):
                raise RuntimeError('Central serves no dashboard; log %s:\n%s' % (
                    self.log_path('central'), self.tail('central')))
            time.sleep(0.05)
        if self.dashboard is None:
            self.dashboard = DashboardRelay(self.dashboard_sock())

    def start_server(self, host, registered=True, timeout=10.0):
        """Start host's chat server; wait until it listens and, with
        registered, until its log says Central has accepted it (so that
        clients starting next already see it in the server list)."""
        self.start(host, host, self.server_cmd(host))
        self.wait_listening(host, CHAT_PORT, name=host)
        deadline = time.time() + timeout
        while registered and 'registered with Central' not in self.tail(host, 50):
            if not self.running(host):
                raise RuntimeError('%s exited; log %s:\n%s' % (
                    host, self.log_path(host), self.tail(host)))
            if time.time() > deadline:
                raise RuntimeError('%s did not register with Central within '
                                   '%.0f s; log %s:\n%s' % (
                                       host, timeout, self.log_path(host),
                                       self.tail(host)))
            time.sleep(0.05)

    def signal(self, name, sig):
        "Send sig to process name (by its PID); returns the time it was sent."
        proc = self.procs[name][0]
        now = time.time()
        if proc.poll() is None:
            proc.send_signal(sig)
        return now

    def stop(self, name, timeout=5.0):
        "SIGTERM, then SIGKILL after timeout; returns the exit status."
        proc, log = self.procs[name]
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        return proc.returncode

    def stop_all(self, timeout=5.0):
        "Stop every process started here; safe to call more than once."
        if self.dashboard is not None:
            self.dashboard.close()
        for name, (proc, _) in reversed(list(self.procs.items())):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.time() + timeout
        for name, (proc, log) in list(self.procs.items()):
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe:
                    pipe.close()
            log.close()


def check_binaries(bindir, names):
    missing = [n for n in names if not os.access(os.path.join(bindir, n), os.X_OK)]
    if missing:
        raise SystemExit('missing in %s: %s (run "make build")' % (
            bindir, ', '.join(missing)))


def shown(path):
    "path relative to the working directory when it lies below it."
    rel = os.path.relpath(path)
    return path if rel.startswith('..') else rel


class TmuxChat:
    """bin/chat in a tmux server of its own (tmux -L HOST) started inside
    HOST's network namespace, so the client dials from that host. The
    socket lives in the shared file system: 'tmux -L HOST attach' from any
    shell on this machine shows the screen."""

    def __init__(self, host, procs, user, width=100, height=30):
        self.host, self.label, self.user = host, host.name, user
        self.log = procs.log_path('tui-' + user)
        cmd = ' '.join(procs.client_cmd(user)) + ' -log ' + self.log
        self.tmux('kill-server')
        out = self.tmux('new-session', '-d', '-s', 'chat', '-x', str(width),
                        '-y', str(height), cmd)
        if 'error' in out.lower() or 'no server' in out.lower():
            raise RuntimeError('tmux in %s: %s' % (self.label, out))

    def tmux(self, *args):
        quoted = ' '.join("'%s'" % a.replace("'", "'\\''") for a in args)
        return self.host.cmd('env -u TMUX tmux -L %s %s 2>&1' % (self.label, quoted))

    def screen(self):
        return self.tmux('capture-pane', '-p', '-t', 'chat')

    def keys(self, *keys):
        self.tmux('send-keys', '-t', 'chat', *keys)

    def type(self, text):
        self.tmux('send-keys', '-t', 'chat', '-l', text)

    def close(self):
        self.tmux('kill-server')


class ChatCLI(CLI):
    """The Mininet CLI with two shortcuts for the demo's chat servers."""

    prompt = 'mininet> '

    def __init__(self, net, procs, **kwargs):
        self.procs = procs
        CLI.__init__(self, net, **kwargs)

    def do_serverup(self, line):
        """serverup HOST: start the chat server in HOST (e.g. serverup serv1);
        its log goes to the run's log directory."""
        host = line.strip()
        if host not in SERVERS:
            print('usage: serverup %s' % '|'.join(SERVERS))
            return
        try:
            self.procs.start_server(host)
            print('%s up (log %s)' % (host, self.procs.log_path(host)))
        except RuntimeError as err:
            print(err)

    def do_chat(self, line):
        """chat HOST USER: open USER's terminal client on HOST (c1 or c2) in
        a tmux server of its own inside HOST's namespace; attach to it from
        another shell with 'tmux -L HOST attach'."""
        args = line.split()
        if len(args) != 2 or args[0] not in CLIENTS:
            print('usage: chat %s USER' % '|'.join(CLIENTS))
            return
        try:
            TmuxChat(self.mn.get(args[0]), self.procs, args[1])
        except RuntimeError as err:
            print(err)
            return
        print('%s runs on %s: in another shell, tmux -L %s attach' % (
            args[1], args[0], args[0]))

    def do_serverkill(self, line):
        """serverkill HOST [TERM]: kill HOST's chat server with SIGKILL, or
        SIGTERM (drain: Central moves its rooms first) with TERM."""
        args = line.split()
        if not args or args[0] not in SERVERS:
            print('usage: serverkill %s [TERM]' % '|'.join(SERVERS))
            return
        if not self.procs.running(args[0]):
            print('%s is not running (from this CLI)' % args[0])
            return
        sig = signal.SIGTERM if args[1:] == ['TERM'] else signal.SIGKILL
        self.procs.signal(args[0], sig)
        print('sent %s to %s' % (sig.name, args[0]))


def print_walkthrough(net, procs, link, switch):
    b = shown(procs.bindir)
    client = '-central %s -control %s' % (procs.central_addr(REST_PORT),
                                          procs.central_addr(CONTROL_PORT))
    # "-id=serv1", not "-id serv1": the CLI replaces words that name a node
    # with its IP address (which is also why the users are not called c1/c2).
    serv1 = ' '.join(shown(a) if a.startswith('/') else a
                     for a in procs.server_cmd(LATE_SERVER, cli=True))
    print("""
*** nearchat on the paper's network: links {delay} ms / {bw} Mbit/s ({how}), {sw} switches
*** Central on {rest} (control {ctl}); chat servers serv2, serv3, serv4 on :{port};
*** serv1 (10.0.0.7, closest to both clients) is held back.
*** The cluster secret is in $NEARCHAT_SECRET in every host. Logs: {logs}
*** Central's live dashboard: {dash} (open it in a browser on this machine)

Chat from c1 and c2, each in its own terminal (the client wants a real one).
Without X, each in a tmux server inside the host's namespace:
  mininet> chat c1 alice        then, in another shell:  sudo tmux -L c1 attach
  mininet> chat c2 bob          then, in another shell:  sudo tmux -L c2 attach
With X:
  mininet> xterm c1 c2          then in each xterm:
      {b}/chat -name alice {client}      (bob in the other)
or, like the paper's "ssh 10.0.0.1", from two more terminals on this machine:
  sudo mnexec -a {c1pid} {abs}/chat -name alice {client}
  sudo mnexec -a {c2pid} {abs}/chat -name bob {client}
or headless bots from this prompt:
  mininet> c2 {b}/chat -bot -name bob -accept {client} > {boblog} 2>&1 &
  mininet> c1 {b}/chat -bot -name alice -peer bob {client}      (Ctrl-C ends it)

The chat starts on serv3 (60 ms RTT). Bring serv1 up (40 ms) and it moves there:
  mininet> serv1 {serv1} > {serv1log} 2>&1 &
  (or: mininet> serverup serv1      and later: serverkill serv1 [TERM])
Kill it (mininet> serv1 kill -9 %%) and the chat moves back to serv3; cut serv3
and serv2 off and it moves to serv4:
  mininet> link s6 s3 down
Other useful commands: c1 ping -c3 serv4, pingall, exit.
""".format(delay=LINK_DELAY_MS, bw=LINK_BW_MBIT,
           how='netem' if link is not nearchat_link.RelayLink else 'userspace relay',
           sw='Open vSwitch' if switch == 'ovs' else 'Linux bridge',
           rest=procs.central_addr(REST_PORT), ctl=procs.central_addr(CONTROL_PORT),
           port=CHAT_PORT, logs=procs.logdir, b=b, abs=procs.bindir,
           dash=procs.dashboard.url(),
           client=client, c1pid=net['c1'].pid, c2pid=net['c2'].pid,
           boblog=shown(procs.log_path('bob')), serv1=serv1,
           serv1log=shown(procs.log_path(LATE_SERVER))))


def parse_timing(args):
    return {'heartbeat': args.heartbeat, 'offline_after': args.offline_after,
            'scan': args.scan, 'min_dwell': args.min_dwell}


def add_common_flags(parser):
    "Flags shared by chat_network.py and scenario.py."
    parser.add_argument('--delay-mode', choices=['auto', 'netem', 'relay'],
                        default='auto',
                        help='link delay by netem (TCLink), by the userspace '
                        'relay (RelayLink), or auto: netem when it works here')
    parser.add_argument('--switch', choices=['lxbr', 'ovs'], default='lxbr',
                        help='Linux bridges (default) or Open vSwitch bridges')
    parser.add_argument('--bin', default=DEFAULT_BIN,
                        help='directory of central, chatserver, chat, '
                        'linkdelay (default: the repository\'s bin/)')
    parser.add_argument('--secret', default=os.environ.get('NEARCHAT_SECRET'),
                        help='cluster secret for Central and the chat servers '
                        '(default $NEARCHAT_SECRET, else a random one)')
    parser.add_argument('--heartbeat', default=DEMO_TIMING['heartbeat'],
                        help='Central -heartbeat (default %(default)s)')
    parser.add_argument('--offline-after', default=DEMO_TIMING['offline_after'],
                        help='Central -offline-after (default %(default)s)')
    parser.add_argument('--scan', default=DEMO_TIMING['scan'],
                        help='Central -scan (default %(default)s)')
    parser.add_argument('--min-dwell', default=DEMO_TIMING['min_dwell'],
                        help='Central -min-dwell (default %(default)s)')
    parser.add_argument('--central-arg', action='append', default=[],
                        metavar='ARG', help='extra argument for Central '
                        '(repeatable, e.g. --central-arg=-v)')
    parser.add_argument('--logdir', help='directory for the processes\' logs '
                        '(default: a new temporary directory)')
    parser.add_argument('-v', action='store_true', help='Mininet info logging')


def main():
    parser = argparse.ArgumentParser(
        description="The paper's chat network in Mininet, with the Mininet CLI.")
    add_common_flags(parser)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print('chat_network.py: Mininet needs root (sudo)', file=sys.stderr)
        return 2
    setLogLevel('info' if args.v else 'output')
    bindir = os.path.abspath(args.bin)
    check_binaries(bindir, ['central', 'chatserver', 'chat', 'linkdelay'])
    secret = args.secret or secrets.token_hex(8)
    # The hosts' shells inherit it, so chatserver typed at the CLI finds it.
    os.environ['NEARCHAT_SECRET'] = secret
    net, procs = None, None
    try:
        info('*** building the network\n')
        net, link = build_network(args.delay_mode, args.switch,
                                  os.path.join(bindir, 'linkdelay'))
        procs = ChatProcesses(net, bindir, secret, logdir=args.logdir,
                              timing=parse_timing(args),
                              central_args=args.central_arg)
        print('*** logs in %s' % procs.logdir)
        procs.start_central()
        for host in SERVERS:
            if host != LATE_SERVER:
                procs.start_server(host)
        print_walkthrough(net, procs, link, args.switch)
        ChatCLI(net, procs)
    except RuntimeError as err:
        print('chat_network.py: %s' % err, file=sys.stderr)
        return 1
    finally:
        if procs is not None:
            procs.stop_all()
        if net is not None:
            net.stop()
        nearchat_link.cleanup()
    return 0


if __name__ == '__main__':
    sys.exit(main())
