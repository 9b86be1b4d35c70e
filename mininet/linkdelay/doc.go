// Package linkdelay is a userspace per-link delay relay: a replacement for
// netem's "delay" on kernels built without sch_netem (many cloud, container
// and WSL kernels, and the machines this project is developed on).
//
// # Design
//
// A Mininet link A<->B normally is one veth pair. With a relay it becomes
//
//	A-eth0 <==veth==> mid-a  [relay]  mid-b <==veth==> B-eth0
//
// where mid-a and mid-b are the far ends of two veth pairs, both left in the
// relay's network namespace (the root namespace under Mininet). The relay
// opens one AF_PACKET raw socket on each middle interface and forwards every
// Ethernet frame (ARP, IPv4, IPv6, anything) that arrives on one to the other
// after a constant one-way delay, in both directions. The middle interfaces
// carry no addresses; the hosts' own interfaces stay ordinary veths, so tc
// (htb for bandwidth), link up/down and everything else Mininet does to them
// keeps working.
//
// Each direction is served by one goroutine locked to its OS thread, which
// waits in epoll on three descriptors: the receiving packet socket, a
// CLOCK_MONOTONIC timerfd and a shared eventfd used to stop. Received frames
// go straight into a preallocated ring (frameRing) together with their due
// time; the ring is a FIFO, and since the delay of a direction is constant,
// frames never get reordered. When the timer fires, all due frames are
// written to the other socket and the timer is re-armed (absolute time) for
// the new head of the queue. Nothing is allocated in steady state.
//
// # Pitfalls this package deals with
//
//   - Offloads. veth hands over frames whose checksum is only partially
//     computed (CHECKSUM_PARTIAL) and GSO super-frames of up to 64 KiB.
//     Relayed as plain bytes, such frames arrive with bad checksums or too big,
//     and TCP silently stalls while ping keeps working. Both sockets therefore
//     enable PACKET_VNET_HDR: every frame is read with its 10-byte
//     virtio_net_hdr (checksum start/offset, GSO type and size) in front, and
//     written back out with that header unchanged, so the kernel on the far
//     side finishes the checksum/segmentation itself. This also keeps
//     throughput high (well above a gigabit per second). Receive buffers must
//     hold the header plus a 64 KiB frame.
//   - Loops. A packet socket also sees the frames it (or anyone) transmits on
//     its interface. PACKET_IGNORE_OUTGOING suppresses them and, as a second
//     line of defence, frames whose sll_pkttype is PACKET_OUTGOING are
//     dropped. The socket is created with protocol 0 (receives nothing) and
//     only then bound to its interface with ETH_P_ALL, so it never sees
//     traffic of other interfaces.
//   - Precision. Go's timers wake up late by up to about a millisecond per
//     hop, which adds up over a path of several links. The relay uses an
//     absolute CLOCK_MONOTONIC timerfd, takes the kernel's receive timestamp
//     (SO_TIMESTAMPNS, delivered as a control message of recvmsg) as the
//     start of each frame's delay, and arms the timer early by an average of
//     the wake-up lateness it observes. SO_TIMESTAMPNS is CLOCK_REALTIME, so
//     it is converted with the realtime-minus-monotonic offset sampled when
//     the frame is read; implausible timestamps fall back to the read time.
//   - Scheduling. On a busy machine (the emulated hosts share its CPUs) a
//     woken relay thread can wait milliseconds for a CPU, and a Go thread
//     returning from a system call may also wait for a free P. The direction
//     threads can therefore run under SCHED_FIFO (Config.RealtimePriority;
//     the command's default) or at least with a lower nice value, and the
//     command raises GOMAXPROCS so that a P is always free. With SCHED_FIFO
//     the median RTT stayed within 0.1-0.7 ms of the configured value over
//     1-5 links even with the machine's load average above 10.
//   - Link state. While a link is down, reads and writes fail with ENETDOWN
//     or ENXIO; the relay drops the frame and carries on (the kernel
//     re-attaches the socket when the interface comes back up). It only stops
//     when one of its interfaces has vanished (ErrInterfaceGone), e.g. when
//     Mininet deletes the link.
//   - Memory. Each direction's queue is bounded (Config.QueueBytes); when it
//     is full, newly arriving frames are dropped (tail drop), as a real
//     link's buffer would. Bandwidth shaping itself is left to tc on the
//     outer interfaces.
//   - IPv6 and promiscuity. The middle interfaces sit in the relay's
//     namespace; IPv6 must be disabled on them (otherwise that namespace's
//     own router solicitations and DAD probes leak into the link), and they
//     must accept frames for any MAC address. The Mininet link class does
//     both; the relay additionally joins PACKET_MR_PROMISC on its sockets
//     (undone automatically when it exits) and, with
//     Config.PrepareInterfaces, disables IPv6 itself.
//
// The command cmd/linkdelay wraps this package; the Mininet link class in
// mininet/nearchat_link.py starts one such process per link.
package linkdelay
