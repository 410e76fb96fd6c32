package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseCommand(t *testing.T) {
	long := strings.Repeat("x", 65)
	tests := []struct {
		line    string
		want    command
		wantErr string
	}{
		{line: "", want: command{kind: cmdNone}},
		{line: "   \t ", want: command{kind: cmdNone}},
		{line: "\n", want: command{kind: cmdNone}},
		{line: "hello there\n", want: command{kind: cmdSay, text: "hello there"}},
		{line: "hello\r\n", want: command{kind: cmdSay, text: "hello"}},
		{line: "  spaced  out  ", want: command{kind: cmdSay, text: "spaced  out"}},
		{line: "//etc/passwd is a path", want: command{kind: cmdSay, text: "/etc/passwd is a path"}},
		{line: "héllo wörld ✓", want: command{kind: cmdSay, text: "héllo wörld ✓"}},
		{line: "bad \xff utf8", wantErr: "not valid UTF-8"},

		{line: "/msg bob hi there", want: command{kind: cmdMsg, nick: "bob", text: "hi there"}},
		{line: "/msg   bob    hi  there  ", want: command{kind: cmdMsg, nick: "bob", text: "hi  there"}},
		{line: "/MSG bob hi", want: command{kind: cmdMsg, nick: "bob", text: "hi"}},
		{line: "/m bob hi", want: command{kind: cmdMsg, nick: "bob", text: "hi"}},
		{line: "/msg bob\thi", want: command{kind: cmdMsg, nick: "bob", text: "hi"}},
		{line: "/msg", wantErr: "usage: /msg <nick> <text>"},
		{line: "/msg bob", wantErr: "no text for bob"},
		{line: "/msg bob    ", wantErr: "no text for bob"},
		{line: "/msg b/ob hi", wantErr: "invalid nick"},
		{line: "/msg " + long + " hi", wantErr: "invalid nick"},

		{line: "/msg Bob hi", want: command{kind: cmdMsg, nick: "bob", text: "hi"}},
		{line: "/msg ｂｏｂ hi", want: command{kind: cmdMsg, nick: "bob", text: "hi"}},
		{line: "/msg b\u043eb hi", wantErr: "mixes scripts"},
		{line: "/msg 12D3KooWGzBfT8k9w5ZxZXqNBpwG5ECW3GRWXYzSMEHMTvBrnFqj hi", want: command{kind: cmdMsg, nick: "12D3KooWGzBfT8k9w5ZxZXqNBpwG5ECW3GRWXYzSMEHMTvBrnFqj", text: "hi"}},
		{line: "/allow 12D3KooWGzBfT8k9w5ZxZXqNBpwG5ECW3GRWXYzSMEHMTvBrnFqj", want: command{kind: cmdAllow, nick: "12D3KooWGzBfT8k9w5ZxZXqNBpwG5ECW3GRWXYzSMEHMTvBrnFqj"}},
		{line: "/allow Bob", want: command{kind: cmdAllow, nick: "bob"}},
		{line: "/allow", wantErr: "usage: /allow <nick|peer-id>"},
		{line: "/block carol", want: command{kind: cmdBlock, nick: "carol"}},
		{line: "/block a b", wantErr: "usage: /block <nick|peer-id>"},
		{line: "/requests", want: command{kind: cmdRequests}},
		{line: "/requests all", wantErr: "usage: /requests"},

		{line: "/to bob", want: command{kind: cmdTo, nick: "bob"}},
		{line: "/to", wantErr: "usage: /to <nick>"},
		{line: "/to bob carol", wantErr: "usage: /to <nick>"},
		{line: "/to bo$b", wantErr: "invalid nick"},

		{line: "/peers", want: command{kind: cmdPeers}},
		{line: "/peers now", wantErr: "usage: /peers"},

		{line: "/whois bob", want: command{kind: cmdWhois, nick: "bob"}},
		{line: "/whois 12D3KooWGzBfT8k9w5ZxZXqNBpwG5ECW3GRWXYzSMEHMTvBrnFqj", want: command{kind: cmdWhois, nick: "12D3KooWGzBfT8k9w5ZxZXqNBpwG5ECW3GRWXYzSMEHMTvBrnFqj"}},
		{line: "/whois", wantErr: "usage: /whois <nick|peer-id>"},

		{line: "/join dev", want: command{kind: cmdJoin, room: "dev"}},
		{line: "/join", wantErr: "usage: /join <room|invite>"},
		{line: "/join a b", wantErr: "usage: /join <room|invite>"},
		{line: "/join ../etc", wantErr: "invalid room"},

		{line: "/history", want: command{kind: cmdHistory, n: defaultHistory}},
		{line: "/history 5", want: command{kind: cmdHistory, n: 5}},
		{line: "/history bob", want: command{kind: cmdHistory, nick: "bob", n: defaultHistory}},
		{line: "/history bob 7", want: command{kind: cmdHistory, nick: "bob", n: 7}},
		{line: "/history 1000", want: command{kind: cmdHistory, n: 1000}},
		{line: "/history 0", wantErr: "between 1 and 1000"},
		{line: "/history -3", wantErr: "between 1 and 1000"},
		{line: "/history 1001", wantErr: "between 1 and 1000"},
		{line: "/history 5 bob", wantErr: "usage: /history"},
		{line: "/history bob many", wantErr: "usage: /history"},
		{line: "/history a b c", wantErr: "usage: /history"},

		{line: "/id", want: command{kind: cmdID}},
		{line: "/id x", wantErr: "usage: /id"},
		{line: "/help", want: command{kind: cmdHelp}},
		{line: "/quit", want: command{kind: cmdQuit}},
		{line: "  /quit  ", want: command{kind: cmdQuit}},
		{line: "/exit", want: command{kind: cmdQuit}},

		{line: "/frobnicate now", wantErr: "unknown command /frobnicate"},
		{line: "/", wantErr: "unknown command /"},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			got, err := parseCommand(tt.line)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"", "hi", "/msg bob hi", "/history bob 3", "/to", "//x", "/join \xff", "/msg a\x00 b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		c, err := parseCommand(line)
		if err != nil {
			return
		}
		switch c.kind {
		case cmdSay, cmdMsg:
			require.NotEmpty(t, c.text)
		case cmdHistory:
			require.True(t, c.n >= 1 && c.n <= maxHistory)
		}
	})
}
