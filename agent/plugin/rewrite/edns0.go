package rewrite

import (
	"encoding/binary"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin"
)

// edns0 applies an edns0 rule to the query's OPT record (made, with a
// 4096-byte buffer, when the query has none, as CoreDNS does) and reports
// whether it matched. The query's options then go upstream. `revert` has
// nothing to do: the agent's replies carry an OPT record of their own,
// never the upstream's options.
func (rl *rule) edns0(r *plugin.Request) bool {
	e := rl.cfg.EDNS0
	var data []byte
	if e.Type == "local" && e.Variable != "" && e.Action != "unset" {
		if data = variable(e.Variable, r); data == nil {
			return false
		}
	}
	opt := r.Msg.IsEdns0()
	if opt == nil {
		r.Msg.SetEdns0(4096, false)
		opt = r.Msg.IsEdns0()
	}
	r.PassOptions = true
	set := e.Action == "set" || e.Action == "replace"
	add := e.Action == "set" || e.Action == "append"
	switch e.Type {
	case "local":
		if e.Action == "unset" {
			unset(opt, e.Code)
			return true
		}
		if e.Variable == "" {
			data = e.Data
		}
		for _, o := range opt.Option {
			if l, ok := o.(*dns.EDNS0_LOCAL); ok && l.Code == e.Code {
				if set {
					l.Data = data
					return true
				}
				if e.Variable != "" {
					return false
				}
			}
		}
		if add {
			opt.Option = append(opt.Option, &dns.EDNS0_LOCAL{Code: e.Code, Data: data})
			return true
		}
	case "nsid":
		if e.Action == "unset" {
			unset(opt, dns.EDNS0NSID)
			return true
		}
		for _, o := range opt.Option {
			if n, ok := o.(*dns.EDNS0_NSID); ok && set {
				n.Nsid = ""
				return true
			}
		}
		if add {
			opt.Option = append(opt.Option, &dns.EDNS0_NSID{Code: dns.EDNS0NSID})
			return true
		}
	case "subnet":
		if e.Action == "unset" {
			unset(opt, dns.EDNS0SUBNET)
			return true
		}
		for _, o := range opt.Option {
			if sn, ok := o.(*dns.EDNS0_SUBNET); ok {
				if set {
					fillSubnet(sn, e, r)
					return true
				}
				return false
			}
		}
		if add {
			sn := &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET}
			fillSubnet(sn, e, r)
			opt.Option = append(opt.Option, sn)
			return true
		}
	}
	return false
}

// unset removes every option with code.
func unset(opt *dns.OPT, code uint16) {
	var keep []dns.EDNS0
	for _, o := range opt.Option {
		if o.Option() != code {
			keep = append(keep, o)
		}
	}
	opt.Option = keep
}

// fillSubnet sets a client subnet option from the client's address.
func fillSubnet(sn *dns.EDNS0_SUBNET, e *corefile.EDNS0Rule, r *plugin.Request) {
	a := r.Client.Addr().Unmap()
	sn.SourceScope = 0
	if a.Is4() {
		sn.Family = 1
		sn.SourceNetmask = e.V4Bits
		p, _ := a.Prefix(int(e.V4Bits))
		sn.Address = p.Addr().AsSlice()
		return
	}
	sn.Family = 2
	sn.SourceNetmask = e.V6Bits
	p, _ := a.Prefix(int(e.V6Bits))
	sn.Address = p.Addr().AsSlice()
}

// variable is the value of a local option's {variable}, or nil (metadata
// labels: the agent has no metadata plugin).
func variable(v string, r *plugin.Request) []byte {
	switch v {
	case "{qname}":
		return []byte(r.Msg.Question[0].Name)
	case "{qtype}":
		return binary.BigEndian.AppendUint16(nil, r.Msg.Question[0].Qtype)
	case "{client_ip}":
		a := r.Client.Addr().Unmap()
		if !a.IsValid() {
			return nil
		}
		return a.AsSlice()
	case "{client_port}":
		return binary.BigEndian.AppendUint16(nil, r.Client.Port())
	case "{protocol}":
		return []byte(r.Proto())
	}
	return nil
}
