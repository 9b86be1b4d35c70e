#!/usr/bin/env python3
"""The paper's quick start with the terminal client, scripted.

alice on c1 and bob on c2 each run bin/chat in a tmux server of their own
(tmux -L c1, tmux -L c2) started inside the host's network namespace, as
'mininet> chat c1 alice' does for a person. The script types into both
with send-keys and reads both screens with capture-pane: alice asks bob,
bob accepts, the chat starts on the best early server (serv3), they
exchange lines, serv1 starts and the chat moves there while they keep
typing; both screens must show every line once, the move, and no line left
pending. Ends with PASS or FAIL and both screens.

Run as root: mininet/tui_scenario.py (make build first).
"""

import argparse
import os
import secrets
import signal
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# pylint: disable=wrong-import-position
from mininet.log import setLogLevel

import chat_network as cn
import nearchat_link


class Failed(Exception):
    "A check failed; the message says which."


def wait(what, timeout, cond):
    deadline = time.time() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.time() > deadline:
            raise Failed('timed out after %.0f s waiting for %s' % (timeout, what))
        time.sleep(0.2)


def wait_screen(pane, timeout, *want):
    "Wait until pane's screen shows every string of want; return it."
    def ok():
        s = pane.screen()
        return s if all(w in s for w in want) else None
    try:
        return wait('%s\'s screen to show %r' % (pane.user, want), timeout, ok)
    except Failed as err:
        raise Failed('%s; the screen:\n%s' % (err, pane.screen()))


def run(args, state):
    early = [s for s in cn.SERVERS if s != cn.LATE_SERVER]
    first = cn.best_server(cn.CLIENTS, early)
    better = cn.best_server(cn.CLIENTS, cn.SERVERS)
    print('expected: the chat starts on %s and moves to %s when it starts' % (first, better))
    net, _ = cn.build_network(args.delay_mode, args.switch,
                              os.path.join(args.bin, 'linkdelay'))
    state['net'] = net
    procs = cn.ChatProcesses(net, args.bin, args.secret or secrets.token_hex(8),
                             logdir=args.logdir or tempfile.mkdtemp(prefix='nearchat-tui-'),
                             timing=cn.parse_timing(args))
    state['procs'] = procs
    print('logs in %s' % procs.logdir)
    procs.start_central()
    for host in early:
        procs.start_server(host)
    alice = cn.TmuxChat(net['c1'], procs, 'alice', height=50)
    state['panes'].append(alice)
    bob = cn.TmuxChat(net['c2'], procs, 'bob', height=50)
    state['panes'].append(bob)
    for p in (alice, bob):
        wait_screen(p, 30, 'Begin a chat', p.user + ' · online', 'RTT: ')

    alice.keys('Enter')
    wait_screen(alice, 10, 'Chat with', 'Online now:')
    alice.type('bob')
    alice.keys('Enter')
    wait_screen(bob, 20, 'View chat requests (1)')
    bob.keys('Down', 'Enter')
    wait_screen(bob, 10, '> alice')
    bob.keys('Enter')
    for p in (alice, bob):
        wait_screen(p, 30, 'on %s' % first)
    print('the chat started on %s on both screens' % first)

    sent = []
    def say(p, text):
        p.type(text)
        p.keys('Enter')
        sent.append('%s: %s' % (p.user, text))
    say(alice, 'hello bob, this is alice on c1')
    say(bob, 'hi alice, bob on c2 here')
    procs.start_server(better)
    t_up = time.time()
    print('%s started' % better)
    n = 0
    while time.time() - t_up < args.move_timeout:
        n += 1
        say(alice if n % 2 else bob, 'line %d while %s comes up' % (n, better))
        time.sleep(0.5)
        if all('on %s' % better in p.screen().splitlines()[0] for p in (alice, bob)):
            break
    for p in (alice, bob):
        wait_screen(p, 10, 'on %s' % better, 'the chat moved to %s' % better)
    print('the chat moved to %s on both screens %.1f s after it started' % (
        better, time.time() - t_up))
    say(alice, 'after the move, from alice')
    say(bob, 'after the move, from bob')
    for p in (alice, bob):
        def complete(p=p):
            s = p.screen()
            return s if all(line in s for line in sent) and '[sending]' not in s else None
        try:
            wait('%s to show all %d lines, none pending' % (p.user, len(sent)), 20, complete)
        except Failed as err:
            missing = [line for line in sent if line not in p.screen()]
            raise Failed('%s: missing %s; the screen:\n%s' % (err, missing, p.screen()))
        for line in sent:
            if p.screen().count(line) != 1:
                raise Failed('%s shows %r %d times' % (p.user, line, p.screen().count(line)))
    print('both screens show all %d lines once, none pending' % len(sent))
    for p in (alice, bob):
        print('\n--- %s on c1/c2 (tmux -L %s) ---\n%s' % (p.user, p.label, p.screen().rstrip()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    cn.add_common_flags(parser)
    parser.add_argument('--timeout', type=int, default=240)
    parser.add_argument('--move-timeout', type=float, default=40)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print('tui_scenario.py: Mininet needs root', file=sys.stderr)
        return 2
    args.bin = os.path.abspath(args.bin)
    cn.check_binaries(args.bin, ['central', 'chatserver', 'chat', 'linkdelay'])
    setLogLevel('info' if args.v else 'warning')
    state = {'net': None, 'procs': None, 'panes': []}

    def give_up(signum, _frame):
        raise Failed('timed out after %d s' % args.timeout if signum == signal.SIGALRM
                     else 'interrupted by signal %d' % signum)
    signal.signal(signal.SIGALRM, give_up)
    signal.signal(signal.SIGTERM, give_up)
    signal.alarm(args.timeout)
    failed = None
    try:
        run(args, state)
    except (Failed, RuntimeError) as err:
        failed = str(err)
    finally:
        signal.alarm(0)
        for p in state['panes']:
            p.close()
        if state['procs'] is not None:
            state['procs'].stop_all()
        if state['net'] is not None:
            state['net'].stop()
        nearchat_link.cleanup()
    print('\nFAIL: %s' % failed if failed else '\nPASS')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
