#!/usr/bin/python3
"""Unit test of scenario.py's ping check, with no network: fake hosts answer
ping with set RTTs. Run by mininet-test.sh before the scenarios:

    /usr/bin/python3 mininet/test_ping_check.py

A delay set wrong must fail the check; a burst a busy machine stalled once
must not (a CI run of 2026-12-04 failed on one burst whose median was 84.7
ms for an 80 ms path, every other path and the next runs within 1 ms).
"""

import os
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# pylint: disable=wrong-import-position
import chat_network as cn
import scenario


class FakeHost:
    "Answers each 10-ping burst with the next RTT of a list, repeated."

    def __init__(self, bursts):
        self.bursts = list(bursts)
        self.calls = 0

    def cmd(self, command, *args):
        if '-c 1 ' in command:
            return ''  # the warm-up ping
        rtt = self.bursts[min(self.calls, len(self.bursts) - 1)]
        self.calls += 1
        return ''.join('64 bytes: icmp_seq=%d ttl=64 time=%.2f ms\n' % (i, rtt)
                       for i in range(10))


def check(bursts_by_client):
    "Runs ping_check on serv4 with fake hosts; returns them and what it said."
    s = scenario.Scenario(args=None)
    said = []
    s.say = said.append
    s.link = type('RelayLink', (), {})
    s.net = {c: FakeHost(bursts_by_client[c]) for c in cn.CLIENTS}
    s.ping_check(['serv4'])
    return s.net, said


class PingCheckTest(unittest.TestCase):
    def want(self, client):
        return cn.expected_rtt_ms(client, 'serv4')

    def test_right_delays_pass_in_one_burst(self):
        net, _ = check({c: [self.want(c) + 0.5] for c in cn.CLIENTS})
        self.assertEqual([h.calls for h in net.values()], [1] * len(cn.CLIENTS))

    def test_one_stalled_burst_is_measured_again(self):
        bursts = {c: [self.want(c) + 0.5] for c in cn.CLIENTS}
        bursts['c2'] = [self.want('c2') + 4.7, self.want('c2') + 0.4]
        net, said = check(bursts)
        self.assertEqual(net['c2'].calls, 2)
        self.assertTrue(any('measuring again' in m for m in said), said)

    def test_a_wrong_delay_fails(self):
        bursts = {c: [self.want(c) + 0.5] for c in cn.CLIENTS}
        bursts['c1'] = [self.want('c1') + 20]
        with self.assertRaises(scenario.ScenarioError) as e:
            check(bursts)
        self.assertIn('link delay is wrong', str(e.exception))
        self.assertIn('in %d bursts' % scenario.PING_TRIES, str(e.exception))


if __name__ == '__main__':
    unittest.main()
