import { multiaddr } from '@multiformats/multiaddr'
import { describe, expect, it } from 'vitest'
import { dialAddrs, isListedWebRTC, type NodeInfo } from '../src/node-info'

const ID = '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'
const RTC = 'webrtc-direct/certhash/uEiDDq4_xNyDorZBH3TlGazyJdOWSwvo4PUo5YHFMrvDE6g'
const info: NodeInfo = {
  peer_id: ID,
  ws_addrs: [`/ip4/127.0.0.1/tcp/4101/ws/p2p/${ID}`, `/ip4/192.168.1.5/tcp/4101/ws/p2p/${ID}`],
  webrtc_addrs: [`/ip4/127.0.0.1/udp/4101/${RTC}/p2p/${ID}`, `/ip4/192.168.1.5/udp/4101/${RTC}/p2p/${ID}`]
}

describe('the sidecar address a page dials', () => {
  it('tries the WebSocket first from a plain-http page (loopback first on loopback), then WebRTC-direct (loopback last)', () => {
    expect(dialAddrs(info, { protocol: 'http:', hostname: '127.0.0.1' })).toEqual([info.ws_addrs[0], info.ws_addrs[1], info.webrtc_addrs![1], info.webrtc_addrs![0]])
  })

  it('prefers the addresses of the host that served the page (another machine)', () => {
    expect(dialAddrs(info, { protocol: 'http:', hostname: '192.168.1.5' })).toEqual([info.ws_addrs[1], info.ws_addrs[0], info.webrtc_addrs![1], info.webrtc_addrs![0]])
    // a page from a name, not an address: loopback last (it is the browser's own machine)
    expect(dialAddrs(info, { protocol: 'http:', hostname: 'node.example' })[0]).toBe(info.ws_addrs[1])
  })

  it('never offers ws:// to a page served over https (mixed content): WebRTC-direct alone', () => {
    expect(dialAddrs(info, { protocol: 'https:', hostname: 'node.example' })).toEqual([info.webrtc_addrs![1], info.webrtc_addrs![0]])
  })

  it('uses WebRTC-direct when the node lists no WebSocket, and nothing where the runtime has no WebRTC', () => {
    const noWs = { ...info, ws_addrs: [] }
    expect(dialAddrs(noWs, { protocol: 'http:', hostname: '127.0.0.1' })).toEqual([info.webrtc_addrs![1], info.webrtc_addrs![0]])
    expect(dialAddrs(noWs, { protocol: 'http:', hostname: '127.0.0.1' }, null, false)).toEqual([])
    expect(dialAddrs({ peer_id: ID, ws_addrs: info.ws_addrs }, { protocol: 'http:', hostname: '127.0.0.1' })).toEqual(info.ws_addrs)
  })

  it('keeps one kind when the page is told to (?transport=)', () => {
    const here = { protocol: 'http:', hostname: '127.0.0.1' }
    expect(dialAddrs(info, here, 'webrtc-direct')).toEqual([info.webrtc_addrs![1], info.webrtc_addrs![0]])
    expect(dialAddrs(info, here, 'ws')).toEqual(info.ws_addrs)
  })

  it('lets the page dial only WebRTC-direct addresses the node listed', () => {
    expect(isListedWebRTC(multiaddr(info.webrtc_addrs![1]), info)).toBe(true)
    expect(isListedWebRTC(multiaddr(`/ip4/192.168.1.5/udp/4101/${RTC}`), info)).toBe(true)
    expect(isListedWebRTC(multiaddr(`/ip4/10.0.0.9/udp/4101/${RTC}/p2p/${ID}`), info)).toBe(false)
    expect(isListedWebRTC(multiaddr(info.ws_addrs[1]), info)).toBe(false)
  })
})
