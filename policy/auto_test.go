package policy

import "testing"

func TestWatchHysteresis(t *testing.T) {
	cfg := AutoConfig{TWBudget: 1000, TWResume: 0.8, PortShare: 0.5, PortResume: 0.4}
	cases := []struct {
		name string
		f    Figures
		in   AutoState
		want AutoState
	}{
		{"host under budget stays off", Figures{HostTW: 999}, AutoState{}, AutoState{}},
		{"host at budget switches on", Figures{HostTW: 1000}, AutoState{}, AutoState{HostSaving: true}},
		{"host between resume and budget stays on", Figures{HostTW: 800}, AutoState{HostSaving: true}, AutoState{HostSaving: true}},
		{"host just under resume switches off", Figures{HostTW: 799}, AutoState{HostSaving: true}, AutoState{}},
		{"host between resume and budget stays off", Figures{HostTW: 900}, AutoState{}, AutoState{}},
		{"ports at share switch on", Figures{DestTW: 500, PortRange: 1000}, AutoState{}, AutoState{PortSaving: true}},
		{"ports under share stay off", Figures{DestTW: 499, PortRange: 1000}, AutoState{}, AutoState{}},
		{"ports at resume stay on", Figures{DestTW: 400, PortRange: 1000}, AutoState{PortSaving: true}, AutoState{PortSaving: true}},
		{"ports under resume switch off", Figures{DestTW: 399, PortRange: 1000}, AutoState{PortSaving: true}, AutoState{}},
		{"unknown port range leaves the port state", Figures{DestTW: 10000}, AutoState{PortSaving: true}, AutoState{PortSaving: true}},
	}
	for _, tc := range cases {
		if got := Watch(cfg, tc.f, tc.in); got != tc.want {
			t.Errorf("%s: got %+v want %+v", tc.name, got, tc.want)
		}
	}
}

func TestResolve(t *testing.T) {
	cases := []struct {
		name   string
		leg    Leg
		first  bool // the client's (front) or backend's (back) FIN came first
		s      AutoState
		target Target
		reason string
	}{
		{"front leg, no pressure, proxy ends first", Front, false, AutoState{}, TargetProxy, ReasonAccepting},
		{"front leg, no pressure, client ends first", Front, true, AutoState{}, TargetNowhere, ReasonSpareDialer},
		{"front leg, host over budget, proxy ends first", Front, false, AutoState{HostSaving: true}, TargetNowhere, ReasonHostBudget},
		{"back leg, no pressure, proxy ends first", Back, false, AutoState{}, TargetPeer, ReasonAccepting},
		{"back leg, no pressure, backend ends first", Back, true, AutoState{}, TargetPeer, ReasonAccepting},
		{"back leg, ports near exhaustion", Back, false, AutoState{PortSaving: true}, TargetNowhere, ReasonPorts},
		{"front leg ignores back-leg port pressure", Front, false, AutoState{PortSaving: true}, TargetProxy, ReasonAccepting},
		{"back leg, host over budget", Back, true, AutoState{HostSaving: true}, TargetNowhere, ReasonHostBudget},
	}
	for _, tc := range cases {
		target, reason := Resolve(tc.leg, tc.first, tc.s)
		if target != tc.target || reason != tc.reason {
			t.Errorf("%s: got %s (%s), want %s (%s)", tc.name, target, reason, tc.target, tc.reason)
		}
	}
}
