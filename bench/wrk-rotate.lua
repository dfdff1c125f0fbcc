-- wrk script for scenario (b): every request asks for the next of NFILES
-- distinct 4 KiB files (/small/f000.bin, /small/f001.bin, ...), so caches
-- keyed by path see all of them. Each wrk thread has its own counter and
-- starts at a different offset.
local n = tonumber(os.getenv("NFILES") or "100")
local i = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("offset", threads * 37)
end

function init(args)
  i = tonumber(offset or 0) or 0
end

function request()
  i = i + 1
  return wrk.format("GET", string.format("/small/f%03d.bin", i % n))
end
