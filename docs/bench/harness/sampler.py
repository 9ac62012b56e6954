#!/usr/bin/env python3
# 1 Hz CPU sampler (v2): chat_server pid (total, user), postgres processes (per-pid deltas of live
# processes, no reaped-children lumps), loadtest processes, and whole machine busy from /proc/stat.
import os, sys, time, json
srv = int(sys.argv[1]); out = sys.argv[2]
HZ = os.sysconf('SC_CLK_TCK')
def snap():
    per = {}
    for d in os.listdir('/proc'):
        if not d.isdigit(): continue
        try: s = open(f'/proc/{d}/stat').read()
        except OSError: continue
        name = s[s.index('(')+1:s.rindex(')')]
        f = s[s.rindex(')')+2:].split()
        per[int(d)] = (name, int(f[11]), int(f[12]))
    c = open('/proc/stat').readline().split()[1:]
    c = list(map(int, c)); busy = sum(c) - c[3] - c[4]
    return time.time(), per, busy
rows = []
prev = snap()
while os.path.exists(f'/proc/{srv}'):
    time.sleep(1)
    cur = snap(); dt = cur[0]-prev[0]
    g = {'server':0,'server_user':0,'postgres':0,'loadtest':0}
    for pid,(name,u,s) in cur[1].items():
        p = prev[1].get(pid)
        if not p or p[0] != name: continue
        du, ds = u-p[1], s-p[2]
        if pid == srv: g['server'] += du+ds; g['server_user'] += du
        elif name == 'postgres': g['postgres'] += du+ds
        elif name == 'loadtest': g['loadtest'] += du+ds
    pct = lambda t: round(100*t/HZ/dt, 1)
    mach = pct(cur[2]-prev[2])
    rows.append([round(cur[0],1), pct(g['server']), pct(g['postgres']), pct(g['loadtest']), pct(g['server_user']), mach,
                 round(mach - pct(g['server']) - pct(g['postgres']) - pct(g['loadtest']),1)])
    prev = cur
json.dump({'cols':['t','server_pct','postgres_pct','loadtest_pct','server_user_pct','machine_busy_pct','other_pct'],'rows':rows}, open(out,'w'))
