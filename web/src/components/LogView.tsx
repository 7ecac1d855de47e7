import { useEffect, useRef } from "react";

/** A job's log, kept scrolled to the newest line unless the reader scrolled up. */
export function LogView({ text, label }: { text: string; label: string }) {
  const pre = useRef<HTMLPreElement>(null);
  const stick = useRef(true);
  useEffect(() => {
    const el = pre.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [text]);
  return (
    <pre ref={pre} className="log" role="log" aria-label={label} tabIndex={0}
         onScroll={(e) => {
           const el = e.currentTarget;
           stick.current = el.scrollTop + el.clientHeight >= el.scrollHeight - 8;
         }}>
      {text || "No output yet."}
    </pre>
  );
}
