import json,glob,os,statistics as st,re,csv
raw='/work/main/docs/bench/raw'
rows=[]
for p in sorted(glob.glob(raw+'/*.json')):
    d=json.load(open(p)); b=d.get('_bench',{})
    if 'sweep' in d: continue
    lab=b['label']; grp=re.sub(r'-\d+$','',lab)
    cpu=b.get('cpu_samples_1hz') or {}
    r=cpu.get('rows',[])
    # steady state: drop first sample (connect) and last; median of the rest
    mid=r[1:-1] if len(r)>3 else r
    med=lambda i: round(st.median([x[i] for x in mid]),1) if mid and len(mid[0])>i else ''
    lag=d.get('send_lag_us') or {}
    rows.append(dict(group=grp,run=lab,scenario=d.get('scenario'),connections=d.get('connections'),rate=d.get('rate'),inflight=d.get('inflight'),
      sent_per_s=d.get('sent_per_s'),delivered_per_s=d.get('delivered_per_s'),p50_us=d.get('p50_us'),p99_us=d.get('p99_us'),p999_us=d.get('p999_us'),
      send_lag_p50_us=lag.get('p50_us'),send_lag_p99_us=lag.get('p99_us'),
      server_cpu_us_per_frame=d.get('server_cpu_us_per_frame'),client_cpu_us_per_frame=d.get('client_cpu_us_per_frame'),
      server_cpu_pct=d.get('server_cpu_pct'),client_cpu_pct=d.get('client_cpu_pct'),
      top_server_pct=med(1),top_postgres_pct=med(2),top_loadtest_pct=med(3),top_server_user_pct=med(4),
      handshakes_per_s=d.get('handshakes_per_s'),rss_kib_before=d.get('server_rss_kib_before'),rss_kib_after=d.get('server_rss_kib_after'),
      kib_per_conn=d.get('server_rss_kib_per_conn'),connections_ok=d.get('connections_ok'),connections_failed=d.get('connections_failed'),
      expected=d.get('expected'),lost=d.get('lost'),dup=d.get('dup'),out_of_order=d.get('out_of_order'),errors=d.get('errors'),server_busy=d.get('server_busy'),disconnects=d.get('disconnects'),
      server_log_warn_error_lines=b.get('server_log_warn_error_lines'),loadavg_before=b.get('loadavg_before'),server_cmd=b.get('server_cmd'),loadtest_cmd=b.get('loadtest_cmd')))
keys=list(rows[0].keys())
with open('/work/main/docs/bench/runs.csv','w',newline='') as f:
    w=csv.DictWriter(f,keys); w.writeheader(); w.writerows(rows)
groups={}
for r in rows: groups.setdefault(r['group'],[]).append(r)
num=['sent_per_s','delivered_per_s','p50_us','p99_us','p999_us','send_lag_p50_us','send_lag_p99_us','server_cpu_us_per_frame','client_cpu_us_per_frame','server_cpu_pct','client_cpu_pct','top_server_pct','top_postgres_pct','top_loadtest_pct','top_server_user_pct','handshakes_per_s','kib_per_conn']
out=[]
for g,rs in groups.items():
    o={'group':g,'n':len(rs)}
    for k in num:
        v=[r[k] for r in rs if isinstance(r[k],(int,float))]
        o[k]=round(st.median(v),3) if v else ''
    for k in ['lost','dup','out_of_order','errors','server_busy','disconnects','connections_failed','server_log_warn_error_lines']:
        o[k+'_sum']=sum((r[k] or 0) for r in rs)
    o['loadavg_range']=f"{min(float(r['loadavg_before'].split()[0]) for r in rs)}-{max(float(r['loadavg_before'].split()[0]) for r in rs)}"
    out.append(o)
with open('/work/main/docs/bench/medians.csv','w',newline='') as f:
    w=csv.DictWriter(f,list(out[0].keys())); w.writeheader(); w.writerows(out)
for o in out: print({k:v for k,v in o.items() if v not in ('',0) or k in('lost_sum','errors_sum')})
