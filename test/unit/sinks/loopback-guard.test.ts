import net from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { installLoopbackGuard, IngestionReceiver } from '../../helpers/ingestion-receiver.js';

describe('loopback guard (used by every export test)', () => {
  const guard = installLoopbackGuard();
  afterAll(() => guard.restore());

  it('blocks and records connections to non-loopback addresses before they are attempted', async () => {
    const err = await new Promise<NodeJS.ErrnoException>((resolve) => net.connect(80, '169.254.169.254').on('error', resolve));
    expect(err.code).toBe('ERR_LOOPBACK_GUARD');
    await expect(fetch('http://192.0.2.10:4318/v1/logs', { method: 'POST', body: '{}' })).rejects.toThrow();
    const tlsErr = await new Promise<NodeJS.ErrnoException>((resolve) => net.connect({ host: 'dc.services.visualstudio.com', port: 443 }).on('error', resolve));
    expect(tlsErr.code).toBe('ERR_LOOPBACK_GUARD');
    expect(guard.violations).toEqual(['169.254.169.254', '192.0.2.10', 'dc.services.visualstudio.com']);
    guard.violations.length = 0;
  });

  it('lets loopback traffic through', async () => {
    const receiver = await IngestionReceiver.start();
    try {
      const res = await fetch(`${receiver.url}/v2.1/track`, { method: 'POST', body: '[]' });
      expect(res.status).toBe(200);
      expect(guard.violations).toEqual([]);
    } finally {
      await receiver.stop();
    }
  });
});
