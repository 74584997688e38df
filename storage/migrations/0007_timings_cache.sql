-- 7: the step cache a job ran with (off | teacache | magcache), so that a job is
-- estimated from the timings of jobs with its cache (a cached step takes about
-- half as long). Timings from before ran uncached.
ALTER TABLE timings ADD COLUMN cache TEXT NOT NULL DEFAULT 'off';
CREATE INDEX IF NOT EXISTS timings_model_cache ON timings (model, cache, finished_at);
