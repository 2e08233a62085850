-- escrow_deposit: put a loan the root lent (escrow_lend.lua) into one
-- bucket's allowance of a project's or the platform's cap, in one window.
-- A loan id already deposited changes nothing: a resent deposit counts once.
--
-- KEYS[1] - the scope's allowance in this window, in the bucket (escrow_keys)
-- ARGV[1] - the loan (micro-units)
-- ARGV[2] - the loan id
-- ARGV[3] - the window's key lifetime (ms)
-- return {R_OK, the allowance after it (micro-units)}

if redis.call('HSETNX', KEYS[1], 'd:' .. ARGV[2], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'allowance', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return {R_OK, tonumber(redis.call('HGET', KEYS[1], 'allowance'))}
